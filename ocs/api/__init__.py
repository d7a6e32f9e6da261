"""The HTTP API wing: a FastAPI app in a process of its own, reaching state only through the
engine's control channel (ocs.charging.control), so an API burst never delays a CCA."""
