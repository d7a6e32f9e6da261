"""`ocs serve` settings: defaults, a TOML file, then command-line flags, each overriding the last."""

from __future__ import annotations

import difflib
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting that cannot be used, named with where it came from."""


@dataclass(slots=True)
class ServeConfig:
    data: str = "./ocs-data"
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:3868"])
    origin_host: str = "ocs.localdomain"
    origin_realm: str = "localdomain"
    metrics: str | None = None
    log_level: str = "INFO"
    validity_time: int = 900
    session_timeout: int | None = None          # default 2 x validity_time (RFC 8506 Tcc)
    quota_holding_time: int = 0                 # 0 = not sent
    quota_threshold_percent: int = 0            # Time-/Volume-Quota-Threshold as % of the grant; 0 = not sent
    default_quota: dict[str, int] = field(default_factory=lambda: {
        "seconds": 300, "octets": 10 * 1024 * 1024, "events": 1})
    max_quota: dict[str, int] = field(default_factory=lambda: {
        "seconds": 3600, "octets": 1024 * 1024 * 1024, "events": 100})
    sync: bool = True
    workers: int = 1
    reuse_port: bool = False                    # set for each worker of --workers N
    allowed_peers: list[str] = field(default_factory=list)   # empty = accept any peer
    watchdog_interval: float = 30.0             # RFC 6733 Tw
    max_message_size: int = 65536
    max_in_flight: int = 20000                  # whole process; beyond it: 3004 TOO_BUSY
    max_in_flight_per_peer: int = 5000         # per Origin-Host, over all its connections
    max_in_flight_bytes: int = 64 * 1024 * 1024  # request bytes held for the engine, whole process
    max_queue_ms: int = 50                      # expected wait beyond which: 3004 TOO_BUSY; 0 = off
    max_connections: int = 512                 # beyond it a new connection is closed at once
    dedup_retention: int = 300                  # seconds answers of closed sessions stay replayable
    sweep_interval: float = 5.0
    cdr_export: bool = True
    cdr_format: str = "csv"
    cdr_rotate_bytes: int = 64 * 1024 * 1024
    cdr_rotate_seconds: int = 300
    max_map_size: int = 0                       # bytes the store may grow to; 0 = 1 TiB
    product_name: str = "OCS"
    api: str = "127.0.0.1:8080"                 # the HTTP API (ocs.api); "" = none (--no-api)
    api_rate_limit: float = 2000.0              # requests/s per API key (bursts of twice that); 0 = off
    webhook_retry: float = 5.0                  # s before a failed webhook's first retry (then doubling)

    def timeout(self) -> int:
        return self.session_timeout if self.session_timeout else 2 * self.validity_time

    def sole_writer(self) -> bool:
        """One engine writes the data dir (not one of the --workers N, which share it): it takes
        the control lock exclusively and serves the control socket."""
        return self.workers == 1 and not self.reuse_port


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# A setting's name (TOML key, and the flag --NAME with _ as -) where it is not the field's name.
RENAMED = {"allow_peer": "allowed_peers"}
DEPRECATED = {"allowed_peers": "allow_peer"}  # older key -> its name now; still accepted
INTERNAL = {"reuse_port"}                     # set by --workers for its children, not a setting


def setting_names() -> list[str]:
    """Every key a TOML file may set (the README's table lists the same)."""
    to_key = {v: k for k, v in RENAMED.items()}
    return [to_key.get(f.name, f.name) for f in fields(ServeConfig) if f.name not in INTERNAL]


def _field_of(key: str, where: str) -> str:
    name = key.replace("-", "_")
    name = RENAMED.get(name, name)
    known = {f.name for f in fields(ServeConfig)} - INTERNAL
    if name in known:
        return name
    near = difflib.get_close_matches(name, setting_names(), n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise ConfigError(f"{where}: unknown setting {key!r}{hint}")


def split_hostport(text: str, what: str = "address") -> tuple[str, int]:
    """'127.0.0.1:3868' or '[::1]:3868' -> (host, port). No host is refused: ':3868' listening on
    every interface of the machine must be asked for, not what a forgotten host gives."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"{what} {text!r} has no host: say 0.0.0.0:{port} or [::]:{port} "
                          "explicitly")
    return host, int(port)


def join_hostport(host: str, port: int) -> str:
    """The inverse of split_hostport: (host, port) -> '127.0.0.1:3868' or '[::1]:3868'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ListenError(OSError):
    """An address the server cannot listen on, named with what it was for (str: the message)."""

    def __str__(self) -> str:
        return str(self.strerror)


def listen_error(exc: OSError, addr: str, what: str) -> ListenError:
    """-> 'cannot listen on 127.0.0.1:9090 (metrics): address already in use'."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        reason = f"cannot resolve the host ({reason})"
    reason = reason[:1].lower() + reason[1:]
    return ListenError(exc.errno, f"cannot listen on {addr} ({what}): {reason}")


QUOTA_UNITS = ("seconds", "octets", "events")
_MAX_QUOTA_VALUE = {"seconds": (1 << 32) - 1, "octets": 1 << 48, "events": 1 << 48}


def _check_quota_settings(cfg: ServeConfig) -> None:
    """Settings that would otherwise be accepted and then fail every request (5012) or grant 0."""
    for name in ("quota_holding_time", "session_timeout"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    pct = cfg.quota_threshold_percent
    if not isinstance(pct, int) or not 0 <= pct <= 100:
        raise ConfigError(f"quota_threshold_percent must be an integer 0..100, got {pct!r}")
    for name in ("default_quota", "max_quota"):
        for unit, value in getattr(cfg, name).items():
            if unit not in QUOTA_UNITS:
                raise ConfigError(f"{name}: unknown unit {unit!r} (one of {', '.join(QUOTA_UNITS)})")
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_QUOTA_VALUE[unit]:
                raise ConfigError(f"{name}.{unit} must be an integer 1..{_MAX_QUOTA_VALUE[unit]}, "
                                  f"got {value!r}")


def load(path: str | Path | None, overrides: dict[str, Any]) -> ServeConfig:
    """Defaults < TOML file < overrides (flags given on the command line, None = not given)."""
    cfg = ServeConfig()
    values: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for key, value in raw.items():
            values[_field_of(key, str(path))] = value
    values.update({_field_of(k, "flags"): v for k, v in overrides.items() if v is not None})
    for name, value in values.items():
        default = getattr(cfg, name)
        if name == "listen" and isinstance(value, str):
            value = [value]
        if isinstance(default, dict):
            value = {**default, **value}
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        setattr(cfg, name, value)
    for addr in cfg.listen:
        split_hostport(addr, "listen")
    if cfg.metrics:
        split_hostport(cfg.metrics, "metrics")
    if not isinstance(cfg.api, str):
        raise ConfigError(f"api must be HOST:PORT or \"\" (none), got {cfg.api!r}")
    if cfg.api:
        split_hostport(cfg.api, "api")
    if isinstance(cfg.api_rate_limit, bool) or not isinstance(cfg.api_rate_limit, (int, float)) \
            or cfg.api_rate_limit < 0:
        raise ConfigError(f"api_rate_limit must be a number >= 0, got {cfg.api_rate_limit!r}")
    if isinstance(cfg.webhook_retry, bool) or not isinstance(cfg.webhook_retry, (int, float)) \
            or not 0.01 <= cfg.webhook_retry <= 3600:
        raise ConfigError(f"webhook_retry must be seconds in 0.01..3600, got {cfg.webhook_retry!r}")
    if cfg.validity_time <= 0:
        raise ConfigError("validity_time must be > 0")
    if cfg.workers < 1:
        raise ConfigError("workers must be >= 1")
    for name in ("max_connections", "max_in_flight", "max_in_flight_per_peer", "max_in_flight_bytes"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_queue_ms < 0:
        raise ConfigError(f"max_queue_ms must be >= 0 (0 = off), got {cfg.max_queue_ms}")
    _check_quota_settings(cfg)
    if not isinstance(cfg.log_level, str) or cfg.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {cfg.log_level!r}")
    cfg.log_level = cfg.log_level.upper()
    return cfg
