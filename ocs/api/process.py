"""The API process: `python -m ocs.api.process --data DIR [--fd N] [--local]`; with no --fd it
delivers webhooks only (`ocs serve --no-api`).

`ocs serve` binds the API's socket itself (so its ready line can name the port) and starts this
with the socket as --fd; it reaches the engine over the control socket. `ocs api` runs it with
--local: no engine runs, this process holds the data dir's lock and runs commands on LMDB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvloop

from ocs.api.webhooks import Deliverer, Settings

log = logging.getLogger("ocs.api")


def _http_server(app: Any, log_level: str) -> Any:
    """uvicorn.Server without its own signal capture: it would re-raise SIGTERM after its graceful
    shutdown, so the process would end by the signal instead of exit 0 (serve installs ours).
    Imported here: the webhook worker alone (`ocs serve --no-api`) loads no HTTP server."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(app, http="httptools", log_level=log_level.lower() if log_level != "INFO" else "warning",
                            access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=5)
    return Server(config)


def serve(sock: socket.socket | None, data: str, *, local: bool, rate: float,
          log_level: str = "INFO", hooks: Settings | None = None) -> int:
    """Serve the API on `sock` (None: the webhook worker alone, for `ocs serve --no-api`)."""
    from ocs.api.backend import Backend, EngineBackend, LocalBackend
    backend: Backend = LocalBackend(data) if local else EngineBackend(data)
    try:
        deliverer = Deliverer(backend, hooks)
        server = None
        if sock is not None:
            from ocs.api.app import build_app
            app = build_app(backend, rate=rate, burst=max(2 * rate, 1.0), deliverer=deliverer)
            server = _http_server(app, log_level)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_signal(*_a: object) -> None:
                if server is not None:
                    server.should_exit = True  # uvicorn polls it; the worker waits on the event
                loop.call_soon_threadsafe(stop.set)
            signal.signal(signal.SIGTERM, on_signal)  # a graceful stop, then exit 0 (uvicorn
            signal.signal(signal.SIGINT, on_signal)   # would re-raise the signal after its own)
            worker = asyncio.create_task(deliverer.run(stop))
            try:
                if server is not None:
                    await server.serve(sockets=[sock])
                else:
                    await stop.wait()
            finally:
                stop.set()
                await worker

        uvloop.run(main())
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
    p.add_argument("--webhook-retry", type=float, default=5.0, metavar="S",
                   help="seconds before a failed webhook's first retry (then doubling)")
    p.add_argument("--webhook-timeout", type=float, default=10.0, metavar="S")
    args = p.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.parent:
        from ocs.lifeline import die_with_parent
        die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN if args.parent else signal.default_int_handler)
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    hooks = Settings(backoff_base=args.webhook_retry, timeout=args.webhook_timeout)
    return serve(sock, args.data, local=args.local, rate=args.rate, log_level=args.log_level,
                 hooks=hooks)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
