"""The `ocs serve` process: the network front, its charging engine, CDR export, shutdown.

Two processes per server (per worker with --workers N): this one runs the event loop (peers,
framing, capabilities exchange, watchdogs, per-session order, overload) and never touches the
store for a request; `ocs.charging.engine` applies the requests to LMDB in durable batches and sends each
answer back only once its transaction is on disk. Background work that waits on the disk here
(CDR export, gauges read from LMDB) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ocs import metrics
from ocs.config import ServeConfig, join_hostport, split_hostport
from ocs.front.dispatch import Dispatcher, EngineLink
from ocs.front.health import Readiness, probe_app
from ocs.front.peer import PeerConnection
from ocs.heap import freeze_warm_heap
from protocol import constants as C

if TYPE_CHECKING:  # not imported at run time: the front stays free of LMDB (see _open_store)
    from ocs.billing.export.exporter import CdrExporter

log = logging.getLogger("ocs.server")

ENGINE_START_SECONDS = 120.0  # numba compile on a cold cache included


# Told once the server accepts: (its Diameter addresses, its metrics address or "").
Ready = Callable[[list[str], str], None]


def _resolve(fut: asyncio.Future[None]) -> None:
    """Set the future's result, once."""
    if not fut.done():
        fut.set_result(None)


class Server:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.peers: set[PeerConnection] = set()
        self.origin_state_id = int(time.time()) & 0xFFFFFFFF
        self._open_store()
        self.dispatcher = Dispatcher(cfg)
        self.engine_proc: subprocess.Popen[bytes] | None = None
        self.listeners: list[asyncio.base_events.Server] = []
        self.addresses: list[str] = []
        self.metrics_address = ""  # where --metrics serves, once it does (port 0 resolved)
        self.api_proc: subprocess.Popen[bytes] | None = None
        self.api_address = ""      # where the HTTP API serves, once it does (port 0 resolved)
        self.exporter: CdrExporter | None = None
        self.exit_code = 0
        self.readiness = Readiness()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._housekeeping_errors: set[str] = set()

    def _open_store(self) -> None:
        """The store, which this process only reads, in the housekeeping thread (gauges, CDR export).

        Imported here rather than at the top: the front's import path stays free of LMDB, numba and
        the charging rules (a test checks it in a fresh interpreter); requests never reach the
        store from this process, the engine process applies them."""
        from balance.store import open_store_capped
        from balance.totals import ReservedTotal
        from ocs.billing.export.health import ExportHealth
        from ocs.charging import credit
        from ocs.charging.counters import open_sessions
        self._export_health = ExportHealth(log)
        self.store = open_store_capped(self.cfg.data, sync=self.cfg.sync,
                                       max_map_size=self.cfg.max_map_size)
        self.dbs = credit.open_dbs(self.store)
        self._open_sessions = open_sessions
        self._reserved = ReservedTotal()

    # -- start ------------------------------------------------------------------------------------
    async def start(self) -> None:
        metrics.IN_FLIGHT.set_function(lambda: self.dispatcher.in_flight)
        await self._start_engine()
        loop = asyncio.get_running_loop()
        for addr in self.cfg.listen:
            host, port = split_hostport(addr, "listen")
            srv = await loop.create_server(partial(PeerConnection, self), host, port,
                                           reuse_port=self.cfg.reuse_port or None, backlog=1024)
            self.listeners.append(srv)
            for sock in srv.sockets:
                name = sock.getsockname()
                self.addresses.append(join_hostport(name[0], name[1]))
        if self.cfg.metrics:
            host, port = split_hostport(self.cfg.metrics, "metrics")
            self.metrics_address = metrics.serve_metrics(host, port, partial(probe_app, self.readiness))
        if self.cfg.cdr_export:
            self._start_exporter()
        self._start_api()
        self._tasks = [asyncio.create_task(self._housekeeping())]
        self.readiness.started = True

    async def _start_engine(self) -> None:
        ours, theirs = socket.socketpair()
        self.engine_proc = subprocess.Popen(
            [sys.executable, "-m", "ocs.charging.engine", str(theirs.fileno()), json.dumps(asdict(self.cfg))],
            pass_fds=[theirs.fileno()])
        theirs.close()
        loop = asyncio.get_running_loop()
        link = EngineLink(self.dispatcher, self._engine_lost, self.readiness)
        await loop.create_connection(lambda: link, sock=ours)
        self.dispatcher.engine = link
        try:
            await asyncio.wait_for(asyncio.shield(link.ready), ENGINE_START_SECONDS)
        except (TimeoutError, ConnectionError) as exc:
            self.engine_proc.kill()
            raise OSError(f"the charging engine did not start: {exc!r}") from None

    def _start_api(self) -> None:
        """The HTTP API in a process of its own (ocs.api.process), so an API burst never delays a
        CCA. We bind its socket here, so a taken port fails the start and the ready line names
        the port; it reaches state through the engine's control socket, which is up by now.
        With --no-api the process still runs, for the webhook delivery worker alone."""
        if not self.cfg.sole_writer():
            log.info("no HTTP API or webhook delivery with --workers N: they need the one engine "
                     "that owns the data dir (run `ocs serve` with one worker, or --no-api)")
            return
        cmd = [sys.executable, "-m", "ocs.api.process", "--data", self.cfg.data,
               "--parent", str(os.getpid()), "--rate", str(self.cfg.api_rate_limit),
               "--log-level", self.cfg.log_level, "--webhook-retry", str(self.cfg.webhook_retry)]
        if not self.cfg.api:
            self.api_proc = subprocess.Popen(cmd)
            return
        host, port = split_hostport(self.cfg.api, "api")
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], info[1], info[2])
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info[4])
            sock.listen(1024)
            name = sock.getsockname()
            self.api_address = join_hostport(name[0], name[1])
            self.api_proc = subprocess.Popen([*cmd, "--fd", str(sock.fileno())],
                                             pass_fds=[sock.fileno()])
        finally:
            sock.close()

    async def _stop_api(self) -> None:
        if self.api_proc is None or self.api_proc.poll() is not None:
            return
        self.api_proc.terminate()  # uvicorn finishes the requests it holds, then exits
        try:
            await asyncio.to_thread(self.api_proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.api_proc.kill()
            await asyncio.to_thread(self.api_proc.wait, 5)

    def _engine_lost(self, expected: bool) -> None:
        if not expected:  # it died: answer what it held, stop rather than accept more
            self.readiness.engine_lost = True
            self.dispatcher.fail_all(C.DIAMETER_UNABLE_TO_DELIVER)
            self.exit_code = 1
            self._stop.set()

    def _start_exporter(self) -> None:
        from ocs.billing.export.exporter import CdrExporter
        try:
            self.exporter = CdrExporter(self.store, Path(self.cfg.data) / "cdr", self.cfg.cdr_format,
                                        rotate_bytes=self.cfg.cdr_rotate_bytes,
                                        rotate_seconds=self.cfg.cdr_rotate_seconds)
        except Exception as exc:  # another process holds the export lock: it exports, we don't
            log.info("continuous CDR export not started here: %s", exc)

    # -- background work --------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        """Once a second: CDR export and gauges, off the loop thread."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self._housekeep_once)
            except Exception as exc:  # a bug: its traceback once per distinct error, not per second
                sig = f"{type(exc).__qualname__}: {exc}"
                if sig not in self._housekeeping_errors:
                    self._housekeeping_errors.add(sig)
                    log.exception("housekeeping failed (logged once per distinct error)")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    def _housekeep_once(self) -> None:
        if self.exporter is not None:
            try:   # a full disk is a state: one line when it starts, one when it ends
                self.exporter.run_once()
            except Exception as exc:
                self._export_health.failed(exc)
            else:
                self._export_health.ok()
            self.readiness.export_failing = self._export_health.failing
        with self.store.read() as view:  # adopts a map grown by the engine
            metrics.OPEN_SESSIONS.set(self._open_sessions(view.txn, self.dbs))
            metrics.RESERVED_MONEY.set(self._reserved.update(view))
        for account_id, status in self._reserved.take_status_changes():
            log.info("account %s is now %s", account_id, status)

    # -- stop -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, drain in-flight requests, DPR every peer, stop the engine, close."""
        self._stop.set()
        self.readiness.stopping = True
        self.dispatcher.end_overload()
        self.dispatcher.stopping = True  # new requests: TOO_BUSY (clients fail over)
        for srv in self.listeners:
            srv.close()
        loop = asyncio.get_running_loop()
        if self.exit_code == 0:
            drained: asyncio.Future[None] = loop.create_future()
            self.dispatcher.on_idle(partial(_resolve, drained))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(drained, grace)
        waits = []
        for peer in list(self.peers):
            fut: asyncio.Future[None] = loop.create_future()
            peer.disconnect(partial(_resolve, fut))
            waits.append(fut)
        if waits:
            await asyncio.wait(waits, timeout=2.0)
        for peer in list(self.peers):
            peer.close("shutdown")
        # _stop is set: housekeeping ends after its current pass. Not cancelled: cancelling the
        # task would leave its thread inside the exporter while we close it (a CDR in two files).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_api()  # before the engine: its commands in flight are answered first
        if self.dispatcher.engine is not None:
            self.dispatcher.engine.close()  # EOF: the engine finishes, syncs and exits
        if self.engine_proc is not None:
            try:
                rc = await asyncio.to_thread(self.engine_proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.engine_proc.kill()
                rc = -9
            if rc != 0 and self.exit_code == 0:
                log.error("the charging engine exited with %s", rc)
                self.exit_code = 1
        if self.exporter is not None:
            try:
                await asyncio.to_thread(self.exporter.close)
            except Exception as exc:  # e.g. the disk is still full: the next start exports them
                from balance.errors import is_write_failure  # off the front's import path
                if not is_write_failure(exc):
                    log.exception("CDR export failed at shutdown")
                log.error("CDR export could not seal its last file at shutdown (%s); its CDRs "
                          "stay in the store and the next start exports them", exc)
        self.store.close()


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def _serve(cfg: ServeConfig, on_ready: Ready | None = None) -> int:
    server = Server(cfg)
    await server.start()
    freeze_warm_heap()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    if on_ready is not None:
        on_ready(server.addresses, server.metrics_address)
    else:
        shown = f" metrics={server.metrics_address}" if server.metrics_address else ""
        shown += f" api={server.api_address}" if server.api_address else ""
        print("OCS ready " + " ".join(server.addresses) + shown, flush=True)
    await server.wait_stopped()
    log.info("stopping: draining %d requests, DPR to %d peers", server.dispatcher.in_flight,
             len(server.peers))
    await server.shutdown()
    return server.exit_code


def run(cfg: ServeConfig, on_ready: Ready | None = None) -> int:
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if cfg.workers > 1:
        from ocs.front.workers import run_workers
        return run_workers(cfg, run)
    install_uvloop()
    return asyncio.run(_serve(cfg, on_ready))
