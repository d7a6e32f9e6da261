"""The `ocs serve` process: listeners, the group-commit writer, the sweeper, CDR export, shutdown.

The event loop only frames, decodes and writes; everything that touches LMDB for a request runs in
the writer thread inside a batch transaction, and the answer is written after that batch's durable
commit. Background work that waits on the disk (CDR export, metrics scans) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from balance import ops
from balance.store import open_store
from balance.writer import GroupCommitWriter
from ocs import credit, metrics, sessions
from ocs.config import ServeConfig, split_hostport
from ocs.dispatch import Dispatcher
from ocs.peer import PeerConnection
from rating import rater as rating_rater
from rating.store import TariffStore

log = logging.getLogger("ocs.server")

SERVER_DBS = ("session_due", "usage")


class Raters:
    """Tariff versions by number, compiled once; `current` follows new versions within a second."""

    def __init__(self, tariffs: TariffStore) -> None:
        self.tariffs = tariffs
        self._by_version: dict[int, object] = {}
        self._current = None
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        current = self.tariffs.current(int(time.time()))
        with self._lock:
            self._current = current
            if current is not None:
                self._by_version.setdefault(current.version, current)

    def __call__(self, version: int | None):  # type: ignore[no-untyped-def]
        if version is None:
            return self._current
        rater = self._by_version.get(version)
        if rater is None:
            rater = self.tariffs.get(version)
            with self._lock:
                self._by_version[version] = rater
        return rater


class Server:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.peers: set[PeerConnection] = set()
        self.origin_state_id = int(time.time()) & 0xFFFFFFFF
        self.store = open_store(cfg.data, sync=cfg.sync)
        with self.store.env.begin(write=True) as txn:
            extra = {name: self.store.env.open_db(name.encode(), txn=txn, create=True)
                     for name in SERVER_DBS}
        self.dbs = {**self.store.dbs, **extra}
        self.tariffs = TariffStore(self.store)
        self.raters = Raters(self.tariffs)
        self.ctx = credit.Context(cfg, self.dbs, self.raters)
        self.writer = GroupCommitWriter(self.store)
        self.dispatcher = Dispatcher(cfg, self.writer, self.ctx)
        self.listeners: list[asyncio.base_events.Server] = []
        self.addresses: list[str] = []
        self.exporter = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- start ------------------------------------------------------------------------------------
    async def start(self) -> None:
        metrics.IN_FLIGHT.set_function(lambda: self.dispatcher.in_flight)
        rating_rater.warm()  # numba compile/cache load before the first request, not during it
        self.writer.start()
        loop = asyncio.get_running_loop()
        for addr in self.cfg.listen:
            host, port = split_hostport(addr, "listen")
            srv = await loop.create_server(partial(PeerConnection, self), host, port,
                                           reuse_port=self.cfg.reuse_port or None, backlog=1024)
            self.listeners.append(srv)
            for sock in srv.sockets:
                name = sock.getsockname()
                shown = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
                self.addresses.append(f"{shown}:{name[1]}")
        if self.cfg.metrics:
            host, port = split_hostport(self.cfg.metrics, "metrics")
            metrics.serve_metrics(host, port)
        if self.cfg.cdr_export:
            self._start_exporter()
        self._tasks = [asyncio.create_task(self._sweeper()), asyncio.create_task(self._housekeeping())]

    def _start_exporter(self) -> None:
        try:
            from ocs.export.exporter import CdrExporter
        except ImportError:  # pragma: no cover - export is part of the package
            return
        try:
            self.exporter = CdrExporter(self.store, Path(self.cfg.data) / "cdr", self.cfg.cdr_format,
                                        rotate_bytes=self.cfg.cdr_rotate_bytes,
                                        rotate_seconds=self.cfg.cdr_rotate_seconds)
        except Exception as exc:  # another process holds the export lock: it exports, we don't
            log.info("continuous CDR export not started here: %s", exc)

    # -- background work --------------------------------------------------------------------------
    async def _sweeper(self) -> None:
        """Close sessions that went quiet (and those a crash left open), purge old answers."""
        while not self._stop.is_set():
            try:
                closed = await self.writer.submit(partial(sweep, ctx=self.ctx))
                if closed:
                    metrics.STALE_SESSIONS.inc(closed)
            except Exception:
                log.exception("sweep failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.cfg.sweep_interval)

    async def _housekeeping(self) -> None:
        """Once a second: new tariff versions, CDR export, gauges; all off the loop thread."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self._housekeep_once)
            except Exception:
                log.exception("housekeeping failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    def _housekeep_once(self) -> None:
        self.raters.refresh()
        if self.exporter is not None:
            self.exporter.run_once()
        with self.store.env.begin(buffers=False) as txn:
            raw = txn.get(credit.OPEN_SESSIONS_KEY, db=self.dbs["meta"])
            metrics.OPEN_SESSIONS.set(int(raw) if raw else 0)
        st = self.writer.stats
        metrics.BATCH_SIZE.observe(st.last_batch)
        if st.batches:
            metrics.COMMIT_LATENCY.observe(st.commit_seconds / st.batches)
        with self.store.read() as view:
            metrics.RESERVED_MONEY.set(sum(a.reserved for a in view.accounts()))

    # -- stop -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, DPR every peer, drain in-flight requests, flush the writer, close."""
        self._stop.set()
        for srv in self.listeners:
            srv.close()
        loop = asyncio.get_running_loop()
        drained = loop.create_future()
        self.dispatcher.on_idle(lambda: drained.done() or drained.set_result(None))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(drained, grace)
        waits = []
        for peer in list(self.peers):
            fut = loop.create_future()
            peer.disconnect(lambda f=fut: f.done() or f.set_result(None))
            waits.append(fut)
        if waits:
            await asyncio.wait(waits, timeout=2.0)
        for peer in list(self.peers):
            peer.close()
        for task in self._tasks:
            task.cancel()
        await self.writer.stop()
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)
        self.store.close()


def sweep(tx, ctx: credit.Context, limit: int = 512) -> int:  # type: ignore[no-untyped-def]
    """One sweeper pass inside the writer: close stale sessions, forget old closed ones.

    Returns how many stale sessions it closed."""
    dbs, now, cfg = ctx.dbs, tx.now, ctx.cfg
    closed = 0
    for key, sid in sessions.due_sessions(tx.txn, dbs, sessions.OPEN, now - cfg.timeout(), limit):
        sess = sessions.load(tx.txn, dbs, sid)
        if sess is None or sess.state != sessions.OPEN or key != sessions.due_key(sess.filed_state, sess.due, sid):
            tx.txn.delete(key, db=dbs["session_due"])  # a leftover key
            if sess is None or sess.state != sessions.OPEN:
                continue
        if sess.seen + cfg.timeout() <= now:
            credit.close_stale(tx, ctx, sess)
            credit.adjust_open_sessions(tx, dbs, -1)
            closed += 1
        sessions.save(tx.txn, dbs, sess, force=True)  # re-filed at its real instant or as closed
    for key, sid in sessions.due_sessions(tx.txn, dbs, sessions.CLOSED, now - cfg.dedup_retention, limit):
        sess = sessions.load(tx.txn, dbs, sid)
        if sess is None:
            tx.txn.delete(key, db=dbs["session_due"])
        else:
            sessions.purge(tx.txn, dbs, sess)
    ops.expire_reservations(tx, now, limit=limit)  # holds whose session record is gone
    ops.expire_bundles(tx, now, limit=limit)
    ops.purge_idempotency(tx, now - ops.IDEM_RETENTION, limit=limit)
    return closed


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def _serve(cfg: ServeConfig, on_ready: Callable[[list[str]], None] | None = None) -> int:
    server = Server(cfg)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    if on_ready is not None:
        on_ready(server.addresses)
    else:
        print("OCS ready " + " ".join(server.addresses), flush=True)
    await server.wait_stopped()
    log.info("stopping: DPR to %d peers, draining %d requests", len(server.peers),
             server.dispatcher.in_flight)
    await server.shutdown()
    return 0


def run(cfg: ServeConfig, on_ready: Callable[[list[str]], None] | None = None) -> int:
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if cfg.workers > 1:
        from ocs.workers import run_workers
        return run_workers(cfg)
    install_uvloop()
    return asyncio.run(_serve(cfg, on_ready))
