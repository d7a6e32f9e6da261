"""The API process: `python -m ocs.api.process --data DIR (--fd N | --listen HOST:PORT) [--local]`.

`ocs serve` binds the API's socket itself (so its ready line can name the port) and starts this
with the socket as --fd; it reaches the engine over the control socket. `ocs api` runs it with
--local: no engine runs, this process holds the data dir's lock and runs commands on LMDB.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

log = logging.getLogger("ocs.api")


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal capture: it would re-raise SIGTERM after its graceful
    shutdown, so the process would end by the signal instead of exit 0 (serve installs ours)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(sock: socket.socket, data: str, *, local: bool, rate: float,
          log_level: str = "INFO") -> int:
    from ocs.api.app import build_app
    from ocs.api.backend import Backend, EngineBackend, LocalBackend
    backend: Backend = LocalBackend(data) if local else EngineBackend(data)
    try:
        app = build_app(backend, rate=rate, burst=max(2 * rate, 1.0))
        config = uvicorn.Config(app, log_level=log_level.lower() if log_level != "INFO" else "warning",
                                access_log=False, lifespan="off", server_header=False,
                                timeout_graceful_shutdown=5)
        server = _Server(config)

        def stop(*_a: object) -> None:
            server.should_exit = True
        signal.signal(signal.SIGTERM, stop)  # a graceful stop, then exit 0 (uvicorn would
        signal.signal(signal.SIGINT, stop)   # re-raise the signal after its own shutdown)
        server.run(sockets=[sock])
    finally:
        backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ocs.api.process")
    p.add_argument("--data", required=True)
    p.add_argument("--fd", type=int)
    p.add_argument("--parent", type=int, help="die with this process (ocs serve)")
    p.add_argument("--local", action="store_true")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.parent:
        from ocs.lifeline import die_with_parent
        die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN if args.parent else signal.default_int_handler)
    sock = socket.socket(fileno=args.fd)
    return serve(sock, args.data, local=args.local, rate=args.rate, log_level=args.log_level)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
