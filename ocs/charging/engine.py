"""The charging engine: a process of its own that applies CCRs to the store, batch by batch.

Why a process: py-lmdb releases the GIL around every get and put, so a writer thread sharing a
process with the event loop hands the GIL back and forth with it on every LMDB call. Measured on
this machine (server CPU per answered CCR-U under `ocs bench`): 72-81 µs with the store work on
the loop thread alone, 112-125 µs with a writer thread beside the loop. Here the main thread does
only CPU work and its own blocking I/O, so nothing contends for its GIL.

The engine reads messages from the network front over a socketpair, each `length, token` + a raw
CCR frame. A reader thread decodes them as they arrive; the main thread takes everything decoded
so far as one batch and runs it in one write transaction (balance.writer's batch logic: isolation of a failing op, map growth), and commits
(data pages fdatasynced, MDB_NOMETASYNC). A syncer thread then fdatasyncs once more, which flushes
the meta page, and only then sends the batch's answers back: every answer leaves after its debit
is durable. While the syncer waits on the disk, the main thread already runs the next batch.
It also runs the sweeper, and before each batch reads whether the tariff schedule changed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict
from functools import partial
from typing import Any

import lmdb
import msgpack

from balance.errors import is_write_failure
from balance.store import open_store_capped
from balance.writer import GroupCommitWriter, Op, Outcome
from ocs.charging import commands, credit, requests, sweeper
from ocs.charging.control import wire as control_wire
from ocs.charging.control.server import ControlServer, Reply
from ocs.charging.settings import ChargingSettings
from ocs.charging.tariffs import Raters
from ocs.config import ServeConfig
from ocs.heap import freeze_warm_heap
from ocs.link import TOKEN_READY, TOKEN_STATS, frame_message, split_messages
from protocol import constants as C
from rating import rater as rating_rater
from rating.tariff_store import TariffStore

log = logging.getLogger("ocs.engine")

_IDS = struct.Struct(">II")
_READ = 1 << 20


class Engine:
    def __init__(self, cfg: ServeConfig, sock: socket.socket) -> None:
        self.cfg = cfg
        self.sock = sock
        # The engine is the only writer of its data dir: it holds the lock exclusively (waiting
        # for a CLI command running on LMDB directly to finish), and the CLI sends it commands.
        # With --workers N the N engines share the environment (LMDB serialises their writes)
        # and the CLI keeps writing it directly: they hold the lock shared and do not listen.
        os.makedirs(cfg.data, exist_ok=True)
        self._lock_fd = control_wire.open_lock(cfg.data)
        control_wire.hold(self._lock_fd, exclusive=cfg.sole_writer())
        self.store = open_store_capped(cfg.data, sync=cfg.sync, max_map_size=cfg.max_map_size)
        self.dbs = credit.open_dbs(self.store)
        self.raters = Raters(TariffStore(self.store))
        self.ctx = credit.Context(ChargingSettings.of(cfg), self.dbs, self.raters)
        self.writer = GroupCommitWriter(self.store)  # its batch logic only; this thread is the writer
        rating_rater.warm()
        self._unsynced = False  # the last sync failed: sync before any answer, even a read's
        self._out: queue.SimpleQueue[tuple[list[Outcome], bool] | None] = queue.SimpleQueue()  # (outcomes, wrote); None: stop
        self._syncer = threading.Thread(target=self._sync_run, name="ocs-engine-sync", daemon=True)
        self._send_lock = threading.Lock()
        self.stale_closed = 0
        self._reader = threading.Thread(target=self._read_run, name="ocs-engine-read", daemon=True)
        self._cond = threading.Condition()
        self._decoded: list[tuple[Op, Any]] = []
        self._eof = False
        self.failed = False
        self._tariffs_failing = False
        self.degraded = Degraded()
        self.control = (ControlServer(cfg.data, self._submit)
                        if cfg.sole_writer() else None)

    # -- main thread --------------------------------------------------------------------------
    def run(self) -> int:
        self._syncer.start()
        self._reader.start()
        if self.control is not None:
            self.control.start()
        freeze_warm_heap()
        self._send(frame_message(TOKEN_READY, b""))
        cfg = self.cfg
        next_sweep = time.monotonic() + cfg.sweep_interval
        next_tick = time.monotonic() + 1.0
        degraded_sent = False
        while True:
            with self._cond:
                if not self._decoded and not self._eof:
                    self._cond.wait(0.25)
                batch, self._decoded = self._decoded, []
                eof = self._eof and not batch
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + cfg.sweep_interval
                batch.append((partial(sweeper.sweep, ctx=self.ctx), None))
            degraded = self.degraded.active
            if now >= next_tick or degraded != degraded_sent:  # a state change: the probe at once
                next_tick = now + 1.0
                degraded_sent = degraded
                if not batch:  # idle: still log a scheduled version taking effect on time
                    self._follow_tariffs()
                stats = {**asdict(self.writer.stats), "stale_closed": self.stale_closed,
                         "degraded": degraded}
                self._send(frame_message(TOKEN_STATS, msgpack.packb(stats)))
            if batch:
                # After the batch is taken, so after every command that returned before one of
                # its requests was sent: read-your-writes for tariffs (accounts, balances and
                # bundles are read in the batch's own write transaction).
                self._follow_tariffs()
                self._run_batch(batch)
            if eof:
                break
        self._out.put(None)
        self._syncer.join()
        if self.control is not None:  # after the syncer: its last answers are sent
            self.control.stop()
        self.store.close()
        return 1 if self.failed else 0

    # -- reader thread ------------------------------------------------------------------------
    def _read_run(self) -> None:
        try:
            self._read_loop()
        except BaseException:
            log.exception("the reader thread failed")
            self.failed = True
            with self._cond:
                self._eof = True
                self._cond.notify()

    def _read_loop(self) -> None:
        """Receive and decode requests while the main thread runs or commits the previous batch.

        Decoding takes the writer's CPU lock, which the main thread holds only while it runs a
        batch's ops, so decoding overlaps the commit's wait on the disk and never contends with
        the ops for the GIL (py-lmdb drops it on every call)."""
        buf = bytearray()
        sock = self.sock
        while True:
            if select.select([sock], [], [], 1.0)[0]:
                data = sock.recv(_READ)
                if not data:
                    with self._cond:
                        self._eof = True
                        self._cond.notify()
                    return
                with self.writer.cpu:  # all Python work under the lock; only syscalls outside
                    buf += data
                    ops = [self._op(token, frame) for token, frame in split_messages(buf)]
                if ops:
                    with self._cond:
                        self._decoded.extend(ops)
                        self._cond.notify()

    def _submit(self, fn: Op, reply: Reply) -> None:
        """A control command, for the next batch (called from a control connection's thread)."""
        with self._cond:
            self._decoded.append((fn, reply))
            self._cond.notify()

    def _op(self, token: int, frame: bytes) -> tuple[requests.Op, tuple[int, bytes]]:
        """(fn, (token, frame)) for the batch; a frame that does not decode is answered at once."""
        return (requests.request_op(self.ctx, frame), (token, frame))

    def _follow_tariffs(self) -> None:
        try:
            self.raters.refresh()
        except Exception:  # keep rating with the versions we have; one report per episode
            if not self._tariffs_failing:
                log.exception("reading the tariff schedule failed; rating with the versions held")
            self._tariffs_failing = True
        else:
            if self._tariffs_failing:
                log.info("reading the tariff schedule works again")
            self._tariffs_failing = False

    def _run_batch(self, batch: list[tuple[Op, Any]]) -> None:
        wrote = False
        try:
            outcomes = self.writer.commit_batch(batch)
            wrote = self.writer.stats.last_wrote
        except Exception as exc:  # nothing of the batch is committed
            if is_write_failure(exc):
                self.degraded.fail(exc, len(batch))
                outcomes = [(target, None, _CannotWrite(exc)) for _fn, target in batch]
            else:
                log.exception("batch failed")
                outcomes = [(target, None, exc) for _fn, target in batch]
        self._out.put((outcomes, wrote))

    # -- syncer thread ------------------------------------------------------------------------
    def _sync_run(self) -> None:
        try:
            self._sync_loop()
        except BaseException:
            # Without this thread no answer would ever leave: end the engine now, so the front
            # sees it and stops (exit 1) instead of answering TOO_BUSY forever.
            log.exception("the syncer thread failed")
            logging.shutdown()
            os._exit(1)

    def _sync_loop(self) -> None:
        while True:
            item = self._out.get()
            ready = [] if item is None else list(item[0])
            wrote = item is not None and item[1]
            stopping = item is None
            while not self._out.empty():  # one sync for every batch committed so far
                more = self._out.get()
                if more is None:
                    stopping = True
                else:
                    ready.extend(more[0])
                    wrote = wrote or more[1]
            sync_error = None
            # A batch that wrote nothing (reads, refusals, the webhook worker's polls) has nothing
            # to make durable: every write before it was synced by an earlier pass of this loop
            # before its answers left, so its answers may leave now. Not so after a failed sync
            # (a read, or a retransmission's stored answer, would show what is not known to be
            # on disk) or beside other engines (--workers: their commits are not ours to know).
            if ready and (wrote or self._unsynced or not self.cfg.sole_writer()):
                t0 = time.perf_counter()
                try:
                    self.store.sync_meta()
                except (OSError, lmdb.Error) as exc:  # py-lmdb reports EIO/ENOSPC as lmdb.Error
                    self.degraded.fail(exc, len(ready))
                    sync_error = exc
                self._unsynced = sync_error is not None
                self.writer.stats.sync_seconds += time.perf_counter() - t0
                self.writer.stats.syncs += 1
                if sync_error is None and wrote:
                    self.degraded.ok()  # a batch that changed something is on disk
            if ready:
                with self.writer.cpu:  # building answers is Python work: not beside the ops
                    for t, r, e in ready:
                        if t is None:  # the sweeper's pass
                            if e is not None and not isinstance(e, _CannotWrite):
                                log.error("sweep failed: %r", e)
                            else:
                                self.stale_closed += r
                                sweeper.report(r)  # once its closes are durable
                        elif isinstance(t, Reply):
                            _reply(t, r, e, sync_error)
                    payload = b"".join(self._answer(t, r, e, sync_error) for t, r, e in ready
                                       if t is not None and not isinstance(t, Reply))
                self._send(payload)
            if stopping:
                return

    def _answer(self, target: tuple[int, bytes], result: object, exc: Exception | None,
                sync_error: Exception | None) -> bytes:
        token, frame = target
        try:
            return self._answer_bytes(token, frame, result, exc, sync_error)
        except Exception:  # never lose the syncer thread (and every later answer) to one request
            log.exception("could not build the answer")
            return frame_message(token, _error(frame, self.cfg, C.DIAMETER_UNABLE_TO_COMPLY, None,
                                               "internal error"))

    def _answer_bytes(self, token: int, frame: bytes, result: object, exc: Exception | None,
                      sync_error: Exception | None) -> bytes:
        if sync_error is not None:
            # Committed but not known to be on disk: a transient error makes the client retransmit,
            # and the retransmission gets the stored answer.
            answer = _error(frame, self.cfg, C.DIAMETER_UNABLE_TO_DELIVER, None, "store sync failed")
        elif isinstance(exc, _CannotWrite):
            # Nothing of it was committed. 3004 is transient (RFC 6733 §7.1.3): a gateway with a
            # second OCS sends it there (RFC 8506 §5.7) instead of applying its failure handling.
            answer = _error(frame, self.cfg, C.DIAMETER_TOO_BUSY, None, "store cannot write")
        else:
            answer = requests.answer(frame, result, exc, self.cfg.origin_host, self.cfg.origin_realm)
        return frame_message(token, answer)

    def _send(self, data: bytes) -> None:
        if data:
            with self._send_lock:
                self.sock.sendall(data)


def _reply(reply: Reply, result: object, exc: Exception | None, sync_error: Exception | None) -> None:
    """A control command's outcome, once its batch is durable (or known not to be)."""
    if sync_error is not None:
        reply.failed(f"the store could not sync ({sync_error}); the change may or may not be in "
                     "force: repeat the command with the same --idempotency-key")
    elif isinstance(exc, _CannotWrite):
        reply.failed(f"the store cannot write ({exc}); nothing was changed")
    else:
        if exc is not None and not isinstance(exc, Exception):
            exc = RuntimeError(repr(exc))
        if exc is not None and not isinstance(exc, commands.Refused):
            log.error("control command failed: %r", exc)
        reply.done(result, exc)


class _CannotWrite(Exception):
    """The batch met a full or failing disk: answered 3004, nothing of it committed."""


class Degraded:
    """The store cannot write: one log line when that starts and one when it ends, with counts,
    instead of an ERROR and a traceback per request (an outside run logged 340,466 lines in three
    minutes of full disk). Called from the main and the syncer threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None
        self.answered = 0     # requests answered 3004/3002 in this episode
        self.episodes = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def fail(self, exc: BaseException, requests: int) -> None:
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                self.answered = 0
                self.episodes += 1
                log.error("the store cannot write (%s): answering charging requests 3004 "
                          "DIAMETER_TOO_BUSY until a write succeeds", exc)
            self.answered += requests

    def ok(self) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            took = time.monotonic() - self.since
            log.warning("the store writes again after %.1f s; %d requests were answered with a "
                        "transient error meanwhile", took, self.answered)
            self.since = None


def _error(frame: bytes, cfg: ServeConfig, code: int, failed: bytes | None, message: str) -> bytes:
    return requests.error_answer(frame, cfg.origin_host, cfg.origin_realm, code, failed, message)


def main() -> int:
    """`python -m ocs.charging.engine FD CONFIG_JSON`, started by the network front."""
    fd, raw = int(sys.argv[1]), sys.argv[2]
    cfg = ServeConfig(**json.loads(raw))
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sock = socket.socket(fileno=fd)
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when we stop: EOF on the socket
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return Engine(cfg, sock).run()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
