"""Exactly-once CDR export to named consumers: each consumer gets every stored CDR once, in files.

CDR ids are gap-free, so a consumer's state is one number, its checkpoint "last id delivered", kept
in db "export" with at most one *intent* (file path, format, first id, last id). A file is sealed as:

  1. intent(path, first, last) committed durably;
  2. the rows written to a hidden temp name beside it, fsynced, renamed to the final name, the
     directory fsynced;
  3. checkpoint := last and the intent deleted, in one durable txn (plus a file log entry).

A crash before 1 loses nothing (the CDRs are still after the checkpoint, the temp file is junk). A crash
after 1 leaves the intent: the consumer's next run redoes it first, regenerating the same rows into the
same path (CDRs are immutable) before it exports anything new, so a file may be rewritten but a CDR is
never dropped or written into two files of one consumer.

Consumers are independent: each has its own checkpoint, intent, file log and lock. The server's
continuous file export (DATA/cdr/) is the reserved consumer `server-files`; its state keeps the
original keys (b"checkpoint", b"intent", b"file:..."), every other consumer's keys are prefixed
b"c/NAME/". One process per consumer at a time: an flock on DIR/export-NAME.lock (the kernel drops
it when the holder dies), so two runs of one consumer cannot claim the same CDRs, while different
consumers and the server run side by side.

Nothing here deletes CDRs: they stay in LMDB as long as the ledger (reconcile compares the two), so a
lagging consumer costs one checkpoint, never extra data.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from ocs.billing.export import cdr_files as formats

SERVER_FILES = "server-files"   # the server's continuous export to DATA/cdr/
DEFAULT_CONSUMER = "export"     # `ocs cdr export` without --consumer
CHECKPOINT = b"checkpoint"
INTENT = b"intent"
RAN = b"ran"
FILE_PREFIX = b"file:"
CONSUMER_PREFIX = b"c/"
READ_CHUNK = 4096          # CDRs per read txn: keep read txns short (they pin pages, block map growth)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PAUSE_ENV = "OCS_TEST_EXPORT_PAUSE"   # test seam: "after-temp" | "after-rename" (see _test_pause)


class ExportError(Exception):
    """The export cannot proceed (lock held, target exists, bad format); one line."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ExportError(f"bad consumer name {name!r} (letters, digits, '.', '_', '-'; at most 64; "
                          "starting with a letter or digit)")
    return name


def _key(consumer: str, sub: bytes) -> bytes:
    if consumer == SERVER_FILES:
        return sub
    return CONSUMER_PREFIX + consumer.encode() + b"/" + sub


@dataclass(slots=True)
class Intent:
    path: str
    fmt: str
    first: int
    last: int

    def pack(self) -> bytes:
        return msgpack.packb([self.path, self.fmt, self.first, self.last])

    @classmethod
    def unpack(cls, raw: bytes) -> Intent:
        return cls(*msgpack.unpackb(raw))


# --- state in db "export" ---

def checkpoint(view, consumer: str = SERVER_FILES) -> int:  # type: ignore[no-untyped-def]
    raw = view.get("export", _key(consumer, CHECKPOINT))
    return int.from_bytes(raw, "big") if raw else 0


def pending_intent(view, consumer: str = SERVER_FILES) -> Intent | None:  # type: ignore[no-untyped-def]
    raw = view.get("export", _key(consumer, INTENT))
    return None if raw is None else Intent.unpack(raw)


def last_ran(view, consumer: str = SERVER_FILES) -> int | None:  # type: ignore[no-untyped-def]
    raw = view.get("export", _key(consumer, RAN))
    return None if raw is None else int(msgpack.unpackb(raw))


def last_cdr_id(view) -> int:  # type: ignore[no-untyped-def]
    cur = view.txn.cursor(db=view.dbs["cdrs"])
    return int.from_bytes(cur.key(), "big") if cur.last() else 0


def first_cdr_id(view) -> int:  # type: ignore[no-untyped-def]
    """The oldest CDR kept (1 unless CDRs were ever removed); 0 when there is none."""
    cur = view.txn.cursor(db=view.dbs["cdrs"])
    return int.from_bytes(cur.key(), "big") if cur.first() else 0


def consumer_names(view) -> list[str]:  # type: ignore[no-untyped-def]
    """Every consumer with state: server-files first (if it ever ran), then the others by name."""
    names = []
    if any(view.get("export", k) is not None for k in (CHECKPOINT, INTENT, RAN)):
        names.append(SERVER_FILES)
    cur = view.txn.cursor(db=view.dbs["export"])
    seen: set[str] = set()
    if cur.set_range(CONSUMER_PREFIX):
        for k in cur.iternext(keys=True, values=False):
            if not k.startswith(CONSUMER_PREFIX):
                break
            seen.add(k[len(CONSUMER_PREFIX):].split(b"/", 1)[0].decode())
    return names + sorted(seen)


def exported_files(view, consumer: str = SERVER_FILES) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The consumer's file log: one entry per sealed file, in id order."""
    prefix = _key(consumer, FILE_PREFIX)
    cur = view.txn.cursor(db=view.dbs["export"])
    if not cur.set_range(prefix):
        return
    for k, v in cur:
        if not k.startswith(prefix):
            return
        path, fmt, first, last, size, at = msgpack.unpackb(v)
        yield {"path": path, "format": fmt, "first": first, "last": last, "bytes": size, "at": at}


@dataclass(slots=True)
class ConsumerState:
    name: str
    position: int            # last CDR id delivered
    lag: int                 # CDRs stored after the position
    last_ran: int | None     # unix seconds of its last run (None: never)
    files: int
    unfinished: str | None   # path of an intent its next run redoes first


def consumer_state(view, name: str) -> ConsumerState:  # type: ignore[no-untyped-def]
    pos = checkpoint(view, name)
    intent = pending_intent(view, name)
    return ConsumerState(name, pos, max(0, last_cdr_id(view) - pos), last_ran(view, name),
                         sum(1 for _ in exported_files(view, name)),
                         None if intent is None else intent.path)


def drop_consumer(store, name: str) -> bool:  # type: ignore[no-untyped-def]
    """Remove a consumer's checkpoint, intent and file log (with its lock held). False: it had none."""
    check_name(name)
    lock = ConsumerLock(store.path, name)
    try:
        def fn(tx):  # type: ignore[no-untyped-def]
            keys = [_key(name, k) for k in (CHECKPOINT, INTENT, RAN)]
            prefix = _key(name, FILE_PREFIX) if name == SERVER_FILES else _key(name, b"")
            cur = tx.txn.cursor(db=tx.dbs["export"])
            if cur.set_range(prefix):
                for k in cur.iternext(keys=True, values=False):
                    if not k.startswith(prefix):
                        break
                    keys.append(bytes(k))
            return sum(bool(tx.delete("export", k)) for k in set(keys))
        return store.execute(fn) > 0
    finally:
        lock.release()


def _raw_rows(store, first: int, last: int) -> Iterator[list[Any]]:  # type: ignore[no-untyped-def]
    """Stored value lists for ids first..last, in short read txns; a missing id is an error."""
    nxt = first
    while nxt <= last:
        with store.read() as view:
            cur = view.txn.cursor(db=view.dbs["cdrs"])
            got = []
            if cur.set_range(nxt.to_bytes(8, "big")):
                for k, v in cur:
                    cid = int.from_bytes(k, "big")
                    if cid > last or len(got) >= READ_CHUNK:
                        break
                    if cid != nxt:
                        raise ExportError(f"CDR {nxt} is missing from the store (found {cid})")
                    got.append(msgpack.unpackb(v))
                    nxt += 1
        if not got:
            raise ExportError(f"CDR {nxt} is missing from the store")
        yield from got


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.part")


def _seal_file(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _test_pause(point: str) -> None:
    """Test seam: with OCS_TEST_EXPORT_PAUSE=point, say so on stderr and wait (for a kill -9)."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    print(f"export paused {point}", file=sys.stderr, flush=True)
    time.sleep(120)


def lock_path(data_dir: str | os.PathLike, consumer: str) -> Path:
    return Path(data_dir) / f"export-{consumer}.lock"


class ConsumerLock:
    """Exclusive flock on DIR/export-NAME.lock; the kernel drops it when the holder dies."""

    def __init__(self, data_dir: str | os.PathLike, consumer: str = SERVER_FILES) -> None:
        self.path = lock_path(data_dir, check_name(consumer))
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            who = ("the server's file export" if consumer == SERVER_FILES
                   else f"another export for consumer {consumer}")
            raise ExportError(f"{who} is running (pid {holder} holds {self.path})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _record_intent(store, intent: Intent, consumer: str = SERVER_FILES) -> None:  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        if pending_intent(tx, consumer) is not None:
            raise ExportError(f"consumer {consumer} has an unfinished export intent")
        if checkpoint(tx, consumer) != intent.first - 1:
            raise ExportError(f"consumer {consumer}: checkpoint moved: {checkpoint(tx, consumer)}, "
                              f"expected {intent.first - 1}")
        tx.put("export", _key(consumer, INTENT), intent.pack())
    store.execute(fn)


def _complete_intent(store, intent: Intent, size: int, consumer: str = SERVER_FILES) -> None:  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        tx.put("export", _key(consumer, CHECKPOINT), intent.last.to_bytes(8, "big"))
        tx.delete("export", _key(consumer, INTENT))
        tx.put("export", _key(consumer, FILE_PREFIX) + intent.first.to_bytes(8, "big"),
               msgpack.packb([intent.path, intent.fmt, intent.first, intent.last, size, tx.now]))
        tx.put("export", _key(consumer, RAN), msgpack.packb(tx.now))
    store.execute(fn)


def _mark_ran(store, consumer: str) -> None:  # type: ignore[no-untyped-def]
    store.execute(lambda tx: tx.put("export", _key(consumer, RAN), msgpack.packb(tx.now)))


def _write_range(store, intent: Intent) -> int:  # type: ignore[no-untyped-def]
    """(Re)generate the intent's file from the store: temp, fsync, rename, fsync dir. Returns bytes."""
    final = Path(intent.path)
    tmp = temp_name(final)
    with open(tmp, "wb") as f:
        formats.write_rows(f, intent.fmt, _raw_rows(store, intent.first, intent.last))
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    _test_pause("after-temp")
    _seal_file(tmp, final)
    _test_pause("after-rename")
    return size


def recover(store, consumer: str = SERVER_FILES) -> Intent | None:  # type: ignore[no-untyped-def]
    """Redo the consumer's unfinished intent (idempotent); call with its lock held."""
    with store.read() as view:
        intent = pending_intent(view, consumer)
    if intent is None:
        return None
    final = Path(intent.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    size = _write_range(store, intent)
    _complete_intent(store, intent, size, consumer)
    return intent


@dataclass(slots=True)
class ExportResult:
    count: int                   # CDRs written to `path` by this run
    first: int
    last: int
    path: Path | None            # None: nothing pending, no file written
    recovered: Intent | None     # an interrupted earlier run of this consumer, finished first


def export_pending(store, out: str | os.PathLike, fmt: str, consumer: str = DEFAULT_CONSUMER, *,  # type: ignore[no-untyped-def]
                   allow_empty: bool = False) -> ExportResult:
    """Export every CDR after the consumer's checkpoint into one new file at `out`.

    An unfinished earlier run of the consumer is finished first (its file rewritten in place); if
    that file is `out` itself, the run ends there. Nothing pending: no file, unless allow_empty
    (then a file with no rows). Refuses an existing `out` and the reserved server-files consumer.
    """
    formats.check_format(fmt)
    check_name(consumer)
    if consumer == SERVER_FILES:
        raise ExportError(f"{SERVER_FILES} is the server's own file export (DATA/cdr/); "
                          "choose another consumer name")
    final = Path(out).absolute()
    lock = ConsumerLock(store.path, consumer)
    try:
        done = recover(store, consumer)
        if done is not None and Path(done.path) == final:
            return ExportResult(done.last - done.first + 1, done.first, done.last, final, done)
        if final.exists():
            raise ExportError(f"{out} already exists (it may hold exported CDRs; choose a new name)")
        if not final.parent.is_dir():
            raise ExportError(f"{final.parent} is not a directory")
        with store.read() as view:
            first, last = checkpoint(view, consumer) + 1, last_cdr_id(view)
        if last < first:
            path = None
            if allow_empty:
                tmp = temp_name(final)
                with open(tmp, "wb") as f:
                    formats.write_rows(f, fmt, [])
                    os.fsync(f.fileno())
                _seal_file(tmp, final)
                path = final
            _mark_ran(store, consumer)
            return ExportResult(0, first, last, path, done)
        intent = Intent(str(final), fmt, first, last)
        _record_intent(store, intent, consumer)
        size = _write_range(store, intent)
        _complete_intent(store, intent, size, consumer)
        return ExportResult(last - first + 1, first, last, final, done)
    finally:
        lock.release()


class CdrExporter:
    """The server's continuous exporter (consumer server-files): rotating files under out_dir,
    sealed exactly once.

    Call `run_once(now)` about every second from a background thread (never the event loop: it
    fsyncs), and `close()` at shutdown to seal the open file. A file is sealed when it reaches
    rotate_bytes (checked after each chunk, and chunks are sized from the average row so files land
    just past the limit) or when its first CDR is rotate_seconds old. Files are named
    cdrs-<first id>-<last id>.<fmt>, zero padded, so name order is id order.
    """

    def __init__(self, store, out_dir: str | os.PathLike, fmt: str = "csv", *,  # type: ignore[no-untyped-def]
                 rotate_bytes: int = 64 << 20, rotate_seconds: float = 300.0,
                 max_rows_per_call: int = 200_000) -> None:
        formats.check_format(fmt)
        if rotate_bytes <= 0 or rotate_seconds <= 0:
            raise ExportError("rotate_bytes and rotate_seconds must be positive")
        self.store = store
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.max_rows_per_call = max_rows_per_call
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = ConsumerLock(store.path, SERVER_FILES)
        self.files_sealed = 0
        self.cdrs_exported = 0
        try:
            for junk in self.out_dir.glob(".cdrs-*.part"):
                junk.unlink()
            if recover(store) is not None:
                self.files_sealed += 1
            _mark_ran(store, SERVER_FILES)     # listed by `ocs cdr consumers` from the start
            with store.read() as view:
                self._after = checkpoint(view)
        except BaseException:
            self._lock.release()
            raise
        self._f: BinaryIO | None = None
        self._w: Any = None
        self._first = 0
        self._opened = 0.0
        self._bytes = 0            # bytes / rows written so far: sizes the next chunk
        self._rows = 0
        # run_once and close may come from two threads (housekeeping, shutdown): one at a time,
        # and nothing after close, or one CDR would land in two files
        self._mutex = threading.Lock()
        self._closed = False

    @property
    def lag(self) -> int:
        """CDRs stored but not yet in a sealed file."""
        with self.store.read() as view:
            return last_cdr_id(view) - checkpoint(view)

    def _open(self, first: int, now: float) -> None:
        self._first = first
        self._opened = now
        self._f = open(self.out_dir / f".cdrs-{first:016d}.part", "wb")  # noqa: SIM115 (spans calls)
        self._w = formats.WRITERS[self.fmt](self._f)

    def _seal(self) -> Path:
        assert self._f is not None
        first, last = self._first, self._after
        final = self.out_dir / f"cdrs-{first:016d}-{last:016d}{formats.SUFFIX[self.fmt]}"
        self._w.finish()
        self._f.flush()
        os.fsync(self._f.fileno())
        size = self._f.tell()
        self._f.close()
        tmp = Path(self._f.name)
        self._f = self._w = None
        intent = Intent(str(final.absolute()), self.fmt, first, last)
        _record_intent(self.store, intent)
        _seal_file(tmp, final)
        _complete_intent(self.store, intent, size)
        self.files_sealed += 1
        self.cdrs_exported += last - first + 1
        return final

    def run_once(self, now: float | None = None) -> list[Path]:
        """Append new CDRs to the open file; seal files that are full or old. Returns sealed paths."""
        with self._mutex:
            return [] if self._closed else self._run(now)

    def _run(self, now: float | None) -> list[Path]:
        now = time.time() if now is None else now
        sealed: list[Path] = []
        budget = self.max_rows_per_call
        while budget > 0:
            room = self.rotate_bytes - (self._f.tell() if self._f is not None else 0)
            avg = self._bytes / self._rows if self._rows else None
            chunk = max(1, min(READ_CHUNK, budget, 64 if avg is None else int(room / avg) + 1))
            with self.store.read() as view:
                rows = [msgpack.unpackb(v) for _, v in
                        _cursor_after(view, self._after, chunk)]
            if not rows:
                break
            if self._f is None:
                self._open(self._after + 1, now)
            before = self._f.tell()  # type: ignore[union-attr]
            self._w.write(rows)
            self._after += len(rows)
            budget -= len(rows)
            grown = self._f.tell() - before  # type: ignore[union-attr]
            if grown > 0:   # parquet buffers: 0 until a row group lands
                self._bytes += grown
                self._rows += len(rows)
            if self._f.tell() >= self.rotate_bytes:  # type: ignore[union-attr]
                sealed.append(self._seal())
        if self._f is not None and now - self._opened >= self.rotate_seconds:
            sealed.append(self._seal())
        return sealed

    def close(self) -> list[Path]:
        """Export what is left and seal the open file, then release the lock."""
        sealed: list[Path] = []
        with self._mutex:
            if self._closed:
                return sealed
            self._closed = True
            try:
                sealed = self._run(float("inf"))
                if self._f is not None:
                    sealed.append(self._seal())
            finally:
                if self._f is not None:
                    self._f.close()
                self._lock.release()
        return sealed


def _cursor_after(view, after: int, limit: int) -> Iterator[tuple[bytes, bytes]]:  # type: ignore[no-untyped-def]
    cur = view.txn.cursor(db=view.dbs["cdrs"])
    if not cur.set_range((after + 1).to_bytes(8, "big")):
        return
    expect = after + 1
    for n, (k, v) in enumerate(cur):
        if n >= limit:
            return
        cid = int.from_bytes(k, "big")
        if cid != expect:
            raise ExportError(f"CDR {expect} is missing from the store (found {cid})")
        expect += 1
        yield k, v
