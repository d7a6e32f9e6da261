"""`ocs serve`: the charging server."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

from ocs.cli.common import CommandError, Subparsers
from ocs.config import (
    LOG_LEVELS,
    ConfigError,
    ListenError,
    ServeConfig,
    listen_error,
    load,
    split_hostport,
)

log = logging.getLogger("ocs.serve")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the Diameter credit-control server",
                       description="Run the OCS: Diameter Gy/RFC 8506 credit control over TCP.")
    p.add_argument("--config", metavar="FILE", help="TOML file with the settings below (flags win)")
    p.add_argument("--data", metavar="DIR", default=None, help="data directory (default ./ocs-data)")
    p.add_argument("--listen", metavar="HOST:PORT", action="append", default=None,
                   help="address to accept peers on (repeatable; [::1]:3868 for IPv6, 0.0.0.0:3868 "
                        "for every interface; default 127.0.0.1:3868; port 0 picks a free one)")
    p.add_argument("--origin-host", default=None)
    p.add_argument("--origin-realm", default=None)
    p.add_argument("--metrics", metavar="HOST:PORT", default=None, help="Prometheus exposition address")
    p.add_argument("--api", metavar="HOST:PORT", default=None,
                   help="the HTTP API's address (default 127.0.0.1:8080)")
    p.add_argument("--no-api", dest="api", action="store_const", const="",
                   help="serve no HTTP API")
    p.add_argument("--api-rate-limit", type=float, default=None, metavar="N",
                   help="requests/s per API key (default 2000; 0: no limit)")
    p.add_argument("--webhook-retry", type=float, default=None, metavar="S",
                   help="seconds before a failed webhook's first retry, doubling up to an hour "
                        "apart, for 24 h (default 5)")
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
    p.add_argument("--allow-peer", action="append", default=None,
                   metavar="ORIGIN_HOST", help="accept only these peers (repeatable)")
    p.add_argument("--no-cdr-export", dest="cdr_export", action="store_const", const=False, default=None,
                   help="do not export CDRs continuously to DATA/cdr/")
    p.set_defaults(func=run)


SETTING_FLAGS = ("data", "listen", "origin_host", "origin_realm", "metrics", "api", "api_rate_limit",
                 "webhook_retry", "log_level",
                 "validity_time", "session_timeout", "quota_holding_time", "sync", "workers",
                 "allow_peer", "cdr_export")


def check_listen(addr: str, what: str) -> None:
    """Bind (and release) each address before the engine starts, so a port in use is one line
    naming it, at once, rather than an error from deep in asyncio after the numba warm-up."""
    try:
        host, port = split_hostport(addr, what)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, sockaddr in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
    except OSError as exc:
        raise CommandError(str(listen_error(exc, addr, what))) from None


def warn_unusable(cfg: ServeConfig) -> list[str]:
    """Warn (and return) what every request will get from a store without a tariff or account:
    the server starts anyway (provisioning may follow), but the operator hears why at once."""
    tariff = account = False
    if (Path(cfg.data) / "data.mdb").exists():
        from balance.store import open_store
        from rating.tariff_store import TariffStore
        with open_store(cfg.data, sync=cfg.sync) as store:
            tariff = TariffStore(store).current() is not None
            with store.read() as view:
                account = next(iter(view.accounts()), None) is not None
    warnings = []
    if not tariff:
        warnings.append(f"no tariff in force in {cfg.data}: every CCR will be answered 5031 "
                        "DIAMETER_RATING_FAILED until one is loaded (`ocs tariff load`)")
    if not account:
        warnings.append(f"no account in {cfg.data}: every CCR will be answered 5030 "
                        "DIAMETER_USER_UNKNOWN until accounts are created (`ocs account create` "
                        "or `ocs account import`)")
    for text in warnings:
        log.warning("%s", text)
    return warnings


def run(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in SETTING_FLAGS}
    try:
        cfg = load(args.config, overrides)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    for addr in cfg.listen:
        check_listen(addr, "diameter")
    if cfg.metrics:
        from ocs.front.workers import worker_metrics
        try:
            every = worker_metrics(cfg.metrics, cfg.workers)  # PORT, or PORT..PORT+N-1
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        for addr in every:
            check_listen(addr, "metrics")
    if cfg.api and cfg.workers == 1:
        check_listen(cfg.api, "api")
    # the format of ocs.front.server.run (whose basicConfig is then a no-op), so this warns in it
    logging.basicConfig(level=getattr(logging, cfg.log_level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    warn_unusable(cfg)
    from ocs.front.server import run as run_server
    try:
        return run_server(cfg)
    except ListenError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot serve: {exc}") from None
