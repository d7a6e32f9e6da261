"""`ocs serve`: the charging server."""

from __future__ import annotations

import argparse

from ocs.commands import CommandError
from ocs.config import LOG_LEVELS, ConfigError, load


def register(sub) -> None:  # type: ignore[no-untyped-def]
    p = sub.add_parser("serve", help="run the Diameter credit-control server",
                       description="Run the OCS: Diameter Gy/RFC 8506 credit control over TCP.")
    p.add_argument("--config", metavar="FILE", help="TOML file with the settings below (flags win)")
    p.add_argument("--data", metavar="DIR", default=None, help="data directory (default ./ocs-data)")
    p.add_argument("--listen", metavar="HOST:PORT", action="append", default=None,
                   help="address to accept peers on (repeatable; [::1]:3868 for IPv6; "
                        "default 127.0.0.1:3868; port 0 picks a free one)")
    p.add_argument("--origin-host", default=None)
    p.add_argument("--origin-realm", default=None)
    p.add_argument("--metrics", metavar="HOST:PORT", default=None, help="Prometheus exposition address")
    p.add_argument("--log-level", default=None, type=str.upper, choices=LOG_LEVELS)
    p.add_argument("--validity-time", type=int, default=None, metavar="S",
                   help="Validity-Time granted with quota (default 900)")
    p.add_argument("--session-timeout", type=int, default=None, metavar="S",
                   help="a session silent this long is closed as stale (default 2 x validity time)")
    p.add_argument("--quota-holding-time", type=int, default=None, metavar="S")
    p.add_argument("--no-sync", dest="sync", action="store_const", const=False, default=None,
                   help="do not fsync commits (benchmarks only: a crash can lose acknowledged debits)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="N processes accepting on the same port (SO_REUSEPORT) over one data dir")
    p.add_argument("--allow-peer", dest="allowed_peers", action="append", default=None,
                   metavar="ORIGIN_HOST", help="accept only these peers (repeatable)")
    p.add_argument("--no-cdr-export", dest="cdr_export", action="store_const", const=False, default=None,
                   help="do not export CDRs continuously to DATA/cdr/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in (
        "data", "listen", "origin_host", "origin_realm", "metrics", "log_level", "validity_time",
        "session_timeout", "quota_holding_time", "sync", "workers", "allowed_peers", "cdr_export")}
    try:
        cfg = load(args.config, overrides)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    from ocs.server import run as run_server
    try:
        return run_server(cfg)
    except OSError as exc:
        raise CommandError(f"cannot serve: {exc}") from None
