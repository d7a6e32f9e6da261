"""`ocs api`: the HTTP API alone over a data dir, with no Diameter server (back-office hosts).

This process is then the writer: it holds the data dir's lock and runs the commands on LMDB
itself (`ocs serve` started meanwhile waits for it to stop). With a server, use `ocs serve`'s
own API (--api) instead.
"""

from __future__ import annotations

import argparse
import socket

from ocs.cli.common import CommandError, Subparsers, add_data_arg, require_data


def register(sub: Subparsers) -> None:
    p = sub.add_parser("api", help="serve the HTTP API over a data dir with no Diameter server")
    add_data_arg(p)
    p.add_argument("--api", metavar="HOST:PORT", default="127.0.0.1:8080",
                   help="listen address (default 127.0.0.1:8080)")
    p.add_argument("--api-rate-limit", type=float, default=2000.0, metavar="N",
                   help="requests/s per API key (default 2000; 0: no limit)")
    p.set_defaults(func=cmd_api)


def cmd_api(args: argparse.Namespace) -> int:
    from ocs.api.backend import LocalBackend
    from ocs.api.process import serve
    from ocs.charging.control.client import Failed, Refused
    from ocs.cli.serve import check_listen
    from ocs.config import ConfigError, join_hostport, split_hostport
    require_data(args.data)
    check_listen(args.api, "api")
    try:
        host, port = split_hostport(args.api, "api")
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    try:
        LocalBackend(args.data).close()  # refuse now, in one line, if a server holds the data dir
    except (Refused, Failed) as exc:
        raise CommandError(str(exc)) from None
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], info[1], info[2])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(info[4])
    sock.listen(1024)
    name = sock.getsockname()
    print(f"OCS API ready {join_hostport(name[0], name[1])}", flush=True)
    return serve(sock, args.data, local=True, rate=args.api_rate_limit)
