"""Group commit: many requests' ops in one durable LMDB write txn, run on a dedicated thread.

Why a thread: LMDB write txns belong to the thread that began them, and the commit's fdatasync
(~65-320 µs here) must not stall the event loop. py-lmdb releases the GIL during commit, so the loop
keeps decoding the next requests while a batch syncs; the next batch is whatever queued meanwhile
(natural batching, no timers). A failing op's writes are undone without touching the others'
(see _commit_batch).

Durability is pipelined: a commit fdatasyncs its data pages (the env has MDB_NOMETASYNC), then the
batch goes to a syncer thread whose fdatasync also flushes the meta page; only then do its futures
complete (one call_soon_threadsafe per sync, covering every batch committed before it). Meanwhile
the writer thread already runs the next batch, so the sync no longer stalls the ops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import lmdb

from balance.errors import StoreFullError
from balance.store import MAX_RETRIES, Store, Tx

T = TypeVar("T")
log = logging.getLogger("balance.writer")

Op = Callable[[Tx], Any]
# (target, result, exception) per op: the target is what the submitter gave with the op (a
# future here; the charging engine's (token, frame), or None for its sweeper pass)
Outcome = tuple[Any, Any, Exception | None]


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    ops: int = 0
    last_batch: int = 0
    commit_seconds: float = 0.0   # total time spent in durable commits
    retries: int = 0              # batches rerun after growing the map
    isolated: int = 0             # batches rerun op-by-op after an op failed mid-write
    syncs: int = 0                # fdatasyncs by the syncer thread (each may cover several batches)
    sync_seconds: float = 0.0
    last_wrote: bool = False      # the last committed batch changed something (a read-only one
    #                               commits without touching the disk, so proves nothing about it)


class WriterStopped(RuntimeError):
    """submit() after stop()."""


class GroupCommitWriter:
    def __init__(self, store: Store, *, max_batch: int = 4096) -> None:
        self.store = store
        self.max_batch = max_batch
        self.stats = WriterStats()
        self._queue: collections.deque[tuple[Op, asyncio.Future[Any]]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        self._committed: collections.deque[list[Outcome]] = collections.deque()  # awaiting a sync
        self._sync_wake = threading.Event()
        self._sync_stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Held while a batch's ops run (not while it commits or syncs), and by any other thread of
        # the process that does Python work beside them (the charging engine's reader and syncer,
        # the completion callbacks here). py-lmdb releases the GIL around every get/put; a thread
        # waiting on the GIL is woken at each release only to lose it again, a convoy measured at
        # ~45 µs per request. Parked on this lock instead, such a thread waits once.
        self.cpu = threading.Lock()

    def start(self) -> None:
        """Start the writer (and syncer) thread; call from the event loop that will submit."""
        self._loop = loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,), name="ocs-group-commit",
                                        daemon=True)
        self._thread.start()
        if self.store.sync:
            self._syncer = threading.Thread(target=self._sync_run, args=(loop,), name="ocs-sync",
                                            daemon=True)
            self._syncer.start()

    async def stop(self) -> None:
        """Stop accepting ops, commit and sync everything queued, complete its futures."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._syncer is not None:
            self._sync_stopping = True
            self._sync_wake.set()
            await asyncio.to_thread(self._syncer.join)
            self._syncer = None
        await asyncio.sleep(0)  # let the last completion callback run

    def submit(self, fn: Callable[[Tx], T]) -> asyncio.Future[T]:
        """Queue fn to run in the next batch; its future completes after the batch is durable."""
        if self._stopping or self._loop is None:
            raise WriterStopped("group-commit writer is not running")
        fut = self._loop.create_future()
        self._queue.append((fn, fut))
        if not self._wake.is_set():
            self._wake.set()
        return fut

    # -- writer thread ------------------------------------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        queue, wake = self._queue, self._wake
        while True:
            wake.wait()
            wake.clear()
            while queue:
                n = min(len(queue), self.max_batch)
                batch = [queue.popleft() for _ in range(n)]
                try:
                    outcomes = self._commit_batch(batch)
                except BaseException as exc:  # the whole batch failed: no op of it is durable
                    err = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                    outcomes = [(fut, None, err) for _, fut in batch]
                    loop.call_soon_threadsafe(_complete, outcomes)
                    continue
                if self._syncer is None:  # not durable by design (--no-sync): answer now
                    loop.call_soon_threadsafe(_complete, outcomes)
                else:
                    self._committed.append(outcomes)
                    self._sync_wake.set()
            if self._stopping and not queue:
                return

    def _complete_locked(self, outcomes: list[Outcome]) -> None:
        with self.cpu:
            _complete(outcomes)

    def _sync_run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make committed batches durable, then complete their futures."""
        committed, wake = self._committed, self._sync_wake
        while True:
            wake.wait()
            wake.clear()
            while committed:
                ready: list[Outcome] = []
                while committed:
                    ready.extend(committed.popleft())
                t0 = time.perf_counter()
                try:
                    self.store.sync_meta()
                except (OSError, lmdb.Error) as exc:  # committed, not known on disk: do not claim it
                    ready = [(fut, None, exc) for fut, _res, _err in ready]
                self.stats.sync_seconds += time.perf_counter() - t0
                self.stats.syncs += 1
                loop.call_soon_threadsafe(self._complete_locked, ready)
            if self._sync_stopping and not committed:
                return

    def commit_batch(self, batch: list[tuple[Op, Any]]) -> list[Outcome]:
        """Run one batch of (fn, target) in this thread and commit it (data pages synced; call
        store.sync_meta() before claiming durability). For a caller that is its own writer
        thread, like the charging engine process. Returns (target, result, exception) per op."""
        return self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[Op, Any]]) -> list[Outcome]:
        """Run and durably commit one batch; (future, result, exception) per op.

        Fast path: all ops share the batch txn. An op that raises without having written (`Tx.dirty`
        false, the balance ops' contract) just gets its exception. One that raises after writing
        makes us abort and rerun the whole batch isolated, each op in its own nested txn (nested
        commits cost O(parent's dirty pages), so they are kept off the fast path). Ops may run more
        than once (also after MapFullError): they must act only through their Tx.
        """
        store = self.store
        now = int(time.time())
        isolated = False
        for _ in range(MAX_RETRIES):
            txn = store.begin_write()
            try:
                with self.cpu:
                    ran = self._run_ops(txn, batch, now, isolated)
            except lmdb.MapFullError:
                store.end(txn, False)
                self.stats.retries += 1
                store.grow()
                continue
            except BaseException:
                store.end(txn, False)
                raise
            if ran is None:  # a dirty failure on the fast path
                store.end(txn, False)
                self.stats.isolated += 1
                isolated = True
                continue
            t0 = time.perf_counter()
            try:
                store.end(txn, True)
            except lmdb.MapFullError:
                self.stats.retries += 1
                store.grow()
                continue
            st = self.stats
            st.commit_seconds += time.perf_counter() - t0
            st.batches += 1
            st.ops += len(batch)
            st.last_batch = len(batch)
            outcomes, st.last_wrote = ran
            return outcomes
        raise StoreFullError(f"{store.path}: batch does not fit after {MAX_RETRIES} growths")

    def _run_ops(self, txn: lmdb.Transaction[bytes], batch: list[tuple[Op, Any]], now: int,
                 isolated: bool) -> tuple[list[Outcome], bool] | None:
        """(outcomes, whether any op wrote), or None for a dirty failure on the fast path."""
        store = self.store
        outcomes: list[Outcome] = []
        append = outcomes.append
        if not isolated:
            wrote = False
            for fn, fut in batch:
                tx = Tx(txn, store, now)
                try:
                    append((fut, fn(tx), None))
                except lmdb.MapFullError:
                    raise
                except Exception as exc:
                    if tx.dirty:
                        return None
                    append((fut, None, exc))
                wrote = wrote or tx.dirty
            return outcomes, wrote
        env = store.env
        for fn, fut in batch:
            child = env.begin(write=True, parent=txn)
            try:
                result = fn(Tx(child, store, now))
            except lmdb.MapFullError:
                child.abort()
                raise
            except Exception as exc:
                child.abort()
                append((fut, None, exc))
                continue
            child.commit()
            append((fut, result, None))
        return outcomes, True


def _complete(outcomes: list[Outcome]) -> None:
    for target, result, exc in outcomes:
        if not isinstance(target, asyncio.Future):
            try:
                target(result, exc)
            except Exception:  # one caller's bug must not strand the others' answers
                log.exception("group-commit completion callback failed")
        elif target.done():
            continue
        elif exc is None:
            target.set_result(result)
        else:
            target.set_exception(exc)
