"""The engine's control channel: provisioning commands and consistent reads over a Unix socket."""
