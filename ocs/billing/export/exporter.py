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

A failed write, flush, fsync, rename or state txn (a full disk) is handled like that crash, in process:
the temp file is dropped (never appended to after an error: a buffered writer may hold half a row), and
the next run starts again from the state in LMDB (intent first, then the checkpoint), writing a new
temp file from scratch. So a file under its final name always holds every row of its range, synced.

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

import contextlib
import errno
import fcntl
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import msgpack

from balance import schema
from balance.errors import is_write_failure
from ocs.billing.cdr import files as formats
from ocs.billing.cdr import layout as cdr_layout

if TYPE_CHECKING:
    from balance.store import Store, Tx
    from balance.views import View

SERVER_FILES = "server-files"   # the server's continuous export to DATA/cdr/
DEFAULT_CONSUMER = "export"     # `ocs cdr export` without --consumer
CHECKPOINT = schema.EXPORT_CHECKPOINT
INTENT = schema.EXPORT_INTENT
RAN = schema.EXPORT_RAN
FILE_PREFIX = schema.EXPORT_FILE_PREFIX
CONSUMER_PREFIX = schema.EXPORT_CONSUMER_PREFIX
READ_CHUNK = 4096          # CDRs per read txn: keep read txns short (they pin pages, block map growth)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PAUSE_ENV = "OCS_TEST_EXPORT_PAUSE"   # test seam: "after-temp" | "after-rename" (see _test_pause)
FAIL_ENV = "OCS_TEST_EXPORT_FAIL"     # test seam: "point:N[,point:N...]" (see fault)
FAULT_POINTS = ("write", "flush", "fsync", "rename", "dirsync", "intent", "checkpoint")


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
        raw: bytes = msgpack.packb([self.path, self.fmt, self.first, self.last])  # msgpack is untyped
        return raw

    @classmethod
    def unpack(cls, raw: bytes) -> Intent:
        return cls(*msgpack.unpackb(raw))


# --- state in db "export" ---

def checkpoint(view: View, consumer: str = SERVER_FILES) -> int:
    raw = view.get("export", _key(consumer, CHECKPOINT))
    return schema.unpack_i64(raw) if raw else 0


def pending_intent(view: View, consumer: str = SERVER_FILES) -> Intent | None:
    raw = view.get("export", _key(consumer, INTENT))
    return None if raw is None else Intent.unpack(raw)


def last_ran(view: View, consumer: str = SERVER_FILES) -> int | None:
    raw = view.get("export", _key(consumer, RAN))
    return None if raw is None else schema.unpack_i64(raw)


def last_cdr_id(view: View) -> int:
    return cdr_layout.last_id(view.txn, view.dbs[schema.CDRS])


def first_cdr_id(view: View) -> int:
    """The oldest CDR kept (1 unless CDRs were ever removed); 0 when there is none."""
    return cdr_layout.first_id(view.txn, view.dbs[schema.CDRS])


def consumer_names(view: View) -> list[str]:
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


def exported_files(view: View, consumer: str = SERVER_FILES) -> Iterator[dict[str, Any]]:
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


def consumer_state(view: View, name: str) -> ConsumerState:
    pos = checkpoint(view, name)
    intent = pending_intent(view, name)
    return ConsumerState(name, pos, max(0, last_cdr_id(view) - pos), last_ran(view, name),
                         sum(1 for _ in exported_files(view, name)),
                         None if intent is None else intent.path)


def drop_consumer(store: Store, name: str) -> bool:
    """Remove a consumer's checkpoint, intent and file log (with its lock held). False: it had none."""
    check_name(name)
    lock = ConsumerLock(store.path, name)
    try:
        def fn(tx: Tx) -> int:
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


def _raw_rows(store: Store, first: int, last: int) -> Iterator[list[Any]]:
    """Stored value lists for ids first..last, in short read txns; a missing id is an error."""
    nxt = first
    while nxt <= last:
        with store.read() as view:
            got = _run_from(view, nxt, READ_CHUNK, last)
        if not got:
            raise ExportError(f"CDR {nxt} is missing from the store")
        nxt += len(got)
        yield from got


# --- test seam: OCS_TEST_EXPORT_FAIL=point:N makes the Nth call at `point` fail with ENOSPC ---

_fault_calls: dict[tuple[str, str], int] = {}


def reset_faults() -> None:
    """Forget the calls counted so far (tests: each case counts from 1)."""
    _fault_calls.clear()


def fault(point: str) -> bool:
    """True (and counted) when the spec says this call at `point` fails; no env var: False, cheaply."""
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return False
    for part in spec.split(","):
        name, _, nth = part.partition(":")
        if name == point:
            key = (spec, point)
            _fault_calls[key] = n = _fault_calls.get(key, 0) + 1
            return str(n) == nth.strip()
    return False


def _fail(point: str) -> None:
    if fault(point):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected at {point})")


class _FaultyFile:
    """The temp file under OCS_TEST_EXPORT_FAIL: a failing write lands half its bytes first, like a
    disk that fills in the middle of a row."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def write(self, data: bytes) -> int:
        if fault("write"):
            self._f.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected at write)")
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _open_temp(path: Path) -> BinaryIO:
    """A new, empty temp file (truncated if a failed earlier attempt left one)."""
    f = open(path, "wb")  # noqa: SIM115 (the caller closes it)
    # a _FaultyFile offers what the writers use of a BinaryIO (write, and the rest delegated)
    return cast(BinaryIO, _FaultyFile(f)) if os.environ.get(FAIL_ENV) else f


def _sync_file(f: BinaryIO) -> None:
    _fail("flush")
    f.flush()
    _fail("fsync")
    os.fsync(f.fileno())


def _drop_temp(f: BinaryIO | None, path: Path, writer: formats.RowWriter | None = None) -> None:
    """After a failure: close without caring whether buffered bytes land, then delete the temp file
    (it frees the space, and nothing is ever appended to a file a write failed on)."""
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.abort()
    if f is not None:
        with contextlib.suppress(Exception):
            f.close()
    with contextlib.suppress(OSError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    _fail("dirsync")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.part")


def _seal_file(tmp: Path, final: Path) -> None:
    _fail("rename")
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _test_pause(point: str) -> None:
    """Test seam: with OCS_TEST_EXPORT_PAUSE=point, say so on stderr and wait (for a kill -9)."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    print(f"export paused {point}", file=sys.stderr, flush=True)
    time.sleep(120)


def lock_path(data_dir: str | os.PathLike[str], consumer: str) -> Path:
    return Path(data_dir) / f"export-{consumer}.lock"


class ConsumerLock:
    """Exclusive flock on DIR/export-NAME.lock; the kernel drops it when the holder dies."""

    def __init__(self, data_dir: str | os.PathLike[str], consumer: str = SERVER_FILES) -> None:
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


def _record_intent(store: Store, intent: Intent, consumer: str = SERVER_FILES) -> None:
    _fail("intent")

    def fn(tx: Tx) -> None:
        if pending_intent(tx, consumer) is not None:
            raise ExportError(f"consumer {consumer} has an unfinished export intent")
        if checkpoint(tx, consumer) != intent.first - 1:
            raise ExportError(f"consumer {consumer}: checkpoint moved: {checkpoint(tx, consumer)}, "
                              f"expected {intent.first - 1}")
        tx.put("export", _key(consumer, INTENT), intent.pack())
    store.execute(fn)


def _complete_intent(store: Store, intent: Intent, size: int, consumer: str = SERVER_FILES) -> None:
    _fail("checkpoint")

    def fn(tx: Tx) -> None:
        tx.put("export", _key(consumer, CHECKPOINT), schema.pack_i64(intent.last))
        tx.delete("export", _key(consumer, INTENT))
        tx.put("export", _key(consumer, FILE_PREFIX) + intent.first.to_bytes(8, "big"),
               msgpack.packb([intent.path, intent.fmt, intent.first, intent.last, size, tx.now]))
        tx.put("export", _key(consumer, RAN), schema.pack_i64(tx.now))
    store.execute(fn)


def _mark_ran(store: Store, consumer: str) -> None:
    store.execute(lambda tx: tx.put("export", _key(consumer, RAN), schema.pack_i64(tx.now)))


def _write_range(store: Store, intent: Intent) -> int:
    """(Re)generate the intent's file from the store: temp, fsync, rename, fsync dir. Returns bytes."""
    final = Path(intent.path)
    tmp = temp_name(final)
    f: BinaryIO | None
    f = _open_temp(tmp)
    try:
        formats.write_rows(f, intent.fmt, _raw_rows(store, intent.first, intent.last))
        _sync_file(f)
        size = f.tell()
        f.close()
        f = None
        _test_pause("after-temp")
        _seal_file(tmp, final)
    except BaseException:
        _drop_temp(f, tmp)
        raise
    _test_pause("after-rename")
    return size


def recover(store: Store, consumer: str = SERVER_FILES) -> Intent | None:
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


def export_pending(store: Store, out: str | os.PathLike[str], fmt: str, consumer: str = DEFAULT_CONSUMER, *,
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
                f: BinaryIO | None
                f = _open_temp(tmp)
                try:
                    formats.write_rows(f, fmt, [])
                    _sync_file(f)
                    f.close()
                    f = None
                    _seal_file(tmp, final)
                except BaseException:
                    _drop_temp(f, tmp)
                    raise
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

    A run that fails (full disk: see balance.errors.is_write_failure) raises, after dropping the open
    temp file; the next run starts over from LMDB (the pending intent, then the checkpoint), so a
    failure at any point costs a rewrite, never a duplicate or a torn row. A run that returns has
    flushed what it wrote to the kernel, so "it returned" means "it could write" (ocs.billing.export.health).
    """

    def __init__(self, store: Store, out_dir: str | os.PathLike[str], fmt: str = "csv", *,
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
        self._f: BinaryIO | None = None
        self._w: formats.RowWriter | None = None
        self._first = 0
        self._opened = 0.0
        self._bytes = 0            # bytes / rows written so far: sizes the next chunk
        self._rows = 0
        self._after = 0
        self._stale = True         # in-memory position unknown: (re)start from LMDB first
        # run_once and close may come from two threads (housekeeping, shutdown): one at a time,
        # and nothing after close, or one CDR would land in two files
        self._mutex = threading.Lock()
        self._closed = False
        try:
            for junk in self.out_dir.glob(".cdrs-*.part"):
                junk.unlink()
            try:
                self._restart()
                _mark_ran(store, SERVER_FILES)     # listed by `ocs cdr consumers` from the start
            except Exception as exc:
                if not is_write_failure(exc):  # a full disk at start: run_once retries (and says so)
                    raise
        except BaseException:
            self._lock.release()
            raise

    @property
    def lag(self) -> int:
        """CDRs stored but not yet in a sealed file."""
        with self.store.read() as view:
            return last_cdr_id(view) - checkpoint(view)

    def _restart(self) -> None:
        """Take the position from LMDB: finish a pending intent, then continue after the checkpoint."""
        if recover(self.store) is not None:
            self.files_sealed += 1
        with self.store.read() as view:
            self._after = checkpoint(view)
        self._stale = False

    def _temp(self, first: int) -> Path:
        return self.out_dir / f".cdrs-{first:016d}.part"

    def _open(self, first: int, now: float) -> tuple[BinaryIO, formats.RowWriter]:
        self._first = first
        self._opened = now
        f = self._f = _open_temp(self._temp(first))
        w = self._w = formats.WRITERS[self.fmt](f)
        return f, w

    def _abandon(self) -> None:
        """A step failed: drop the open temp file and forget the in-memory position."""
        if self._f is not None or self._w is not None:
            _drop_temp(self._f, self._temp(self._first), self._w)
        self._f = self._w = None
        self._stale = True

    def _seal(self) -> Path:
        assert self._f is not None and self._w is not None
        first, last = self._first, self._after
        final = self.out_dir / f"cdrs-{first:016d}-{last:016d}{formats.SUFFIX[self.fmt]}"
        self._w.finish()
        _sync_file(self._f)
        size = self._f.tell()
        self._f.close()
        tmp = self._temp(first)
        self._f = self._w = None
        intent = Intent(str(final.absolute()), self.fmt, first, last)
        try:
            _record_intent(self.store, intent)
            _seal_file(tmp, final)
            _complete_intent(self.store, intent, size)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.files_sealed += 1
        self.cdrs_exported += last - first + 1
        return final

    def run_once(self, now: float | None = None) -> list[Path]:
        """Append new CDRs to the open file; seal files that are full or old. Returns sealed paths.

        Raises what a failed step raised (e.g. OSError ENOSPC), with nothing half done left behind."""
        with self._mutex:
            if self._closed:
                return []
            try:
                return self._run(now)
            except BaseException:
                self._abandon()
                raise

    def _run(self, now: float | None) -> list[Path]:
        now = time.time() if now is None else now
        if self._stale:
            self._restart()
        sealed: list[Path] = []
        budget = self.max_rows_per_call
        while budget > 0:
            room = self.rotate_bytes - (self._f.tell() if self._f is not None else 0)
            avg = self._bytes / self._rows if self._rows else None
            chunk = max(1, min(READ_CHUNK, budget, 64 if avg is None else int(room / avg) + 1))
            with self.store.read() as view:
                rows = _run_from(view, self._after + 1, chunk)
            if not rows:
                break
            if self._f is None or self._w is None:
                f, w = self._open(self._after + 1, now)
            else:
                f, w = self._f, self._w
            before = f.tell()
            w.write(rows)
            self._after += len(rows)
            budget -= len(rows)
            grown = f.tell() - before
            if grown > 0:   # parquet buffers: 0 until a row group lands
                self._bytes += grown
                self._rows += len(rows)
            if f.tell() >= self.rotate_bytes:
                sealed.append(self._seal())
        if self._f is not None and now - self._opened >= self.rotate_seconds:
            sealed.append(self._seal())
        if self._f is not None:  # rows to the kernel now: a run that returns has written them
            _fail("flush")
            self._f.flush()
        return sealed

    def close(self) -> list[Path]:
        """Export what is left and seal the open file, then release the lock. If that fails (full
        disk) it raises, the temp file gone: the CDRs wait in LMDB for the next start."""
        sealed: list[Path] = []
        with self._mutex:
            if self._closed:
                return sealed
            self._closed = True
            try:
                sealed = self._run(float("inf"))
                if self._f is not None:
                    sealed.append(self._seal())
            except BaseException:
                self._abandon()
                raise
            finally:
                if self._f is not None:
                    self._f.close()
                self._lock.release()
        return sealed


def _run_from(view: View, first: int, limit: int, last: int | None = None) -> list[list[Any]]:
    """The stored value lists of ids first, first + 1, ... (at most `limit`, none past `last`,
    fewer at the end of the store). Ids are gap-free, and the checkpoint relies on it: a missing
    id is an error."""
    got: list[list[Any]] = []
    for cid, vals in cdr_layout.stored_from(view.txn, view.dbs[schema.CDRS], first):
        if last is not None and cid > last:
            break
        if cid != first + len(got):
            raise ExportError(f"CDR {first + len(got)} is missing from the store (found {cid})")
        got.append(vals)
        if len(got) >= limit:
            break
    return got
