"""Exactly-once CDR export: every stored CDR lands in exactly one complete file.

CDR ids are gap-free, so the export state is one number, the checkpoint "last exported id", kept
in db "export" with at most one *intent* (file path, format, first id, last id). A file is sealed as:

  1. intent(path, first, last) committed durably;
  2. the rows written to a hidden temp name beside it, fsynced, renamed to the final name, the
     directory fsynced;
  3. checkpoint := last and the intent deleted, in one durable txn (plus a file log entry).

A crash before 1 loses nothing (the CDRs are still after the checkpoint, the temp file is junk and is
removed on start). A crash after 1 leaves the intent: the next exporter redoes it first, regenerating
the same rows into the same path (CDRs are immutable) before it exports anything new, so a file may be
rewritten but a CDR is never dropped or written into two files.

One exporter per data dir at a time (an flock on DIR/export.lock, released by the kernel if the process
dies), so the server's continuous exporter and `ocs cdr export` cannot both claim the same CDRs.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from ocs.billing.export import cdr_files as formats

CHECKPOINT = b"checkpoint"
INTENT = b"intent"
FILE_PREFIX = b"file:"
READ_CHUNK = 4096          # CDRs per read txn: keep read txns short (they pin pages, block map growth)


class ExportError(Exception):
    """The export cannot proceed (lock held, target exists, bad format); one line."""


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

def checkpoint(view) -> int:  # type: ignore[no-untyped-def]
    raw = view.get("export", CHECKPOINT)
    return int.from_bytes(raw, "big") if raw else 0


def pending_intent(view) -> Intent | None:  # type: ignore[no-untyped-def]
    raw = view.get("export", INTENT)
    return None if raw is None else Intent.unpack(raw)


def last_cdr_id(view) -> int:  # type: ignore[no-untyped-def]
    cur = view.txn.cursor(db=view.dbs["cdrs"])
    return int.from_bytes(cur.key(), "big") if cur.last() else 0


def exported_files(view) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The file log: one entry per sealed file, in id order."""
    cur = view.txn.cursor(db=view.dbs["export"])
    if not cur.set_range(FILE_PREFIX):
        return
    for k, v in cur:
        if not k.startswith(FILE_PREFIX):
            return
        path, fmt, first, last, size, at = msgpack.unpackb(v)
        yield {"path": path, "format": fmt, "first": first, "last": last, "bytes": size, "at": at}


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


class ExportLock:
    """Exclusive flock on DIR/export.lock; the kernel drops it when the holder dies."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.path = Path(data_dir) / "export.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise ExportError(f"another exporter (pid {holder}) holds {self.path}; "
                              "a running server exports CDRs itself") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _record_intent(store, intent: Intent) -> None:  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        if pending_intent(tx) is not None:
            raise ExportError("an unfinished export intent exists")
        if checkpoint(tx) != intent.first - 1:
            raise ExportError(f"checkpoint moved: {checkpoint(tx)}, expected {intent.first - 1}")
        tx.put("export", INTENT, intent.pack())
    store.execute(fn)


def _complete_intent(store, intent: Intent, size: int) -> None:  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        tx.put("export", CHECKPOINT, intent.last.to_bytes(8, "big"))
        tx.delete("export", INTENT)
        tx.put("export", FILE_PREFIX + intent.first.to_bytes(8, "big"),
               msgpack.packb([intent.path, intent.fmt, intent.first, intent.last, size, tx.now]))
    store.execute(fn)


def _write_range(store, intent: Intent) -> int:  # type: ignore[no-untyped-def]
    """(Re)generate the intent's file from the store: temp, fsync, rename, fsync dir. Returns bytes."""
    final = Path(intent.path)
    tmp = temp_name(final)
    with open(tmp, "wb") as f:
        formats.write_rows(f, intent.fmt, _raw_rows(store, intent.first, intent.last))
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    _seal_file(tmp, final)
    return size


def recover(store) -> Path | None:  # type: ignore[no-untyped-def]
    """Redo an unfinished intent (idempotent); call with the export lock held."""
    with store.read() as view:
        intent = pending_intent(view)
    if intent is None:
        return None
    final = Path(intent.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    size = _write_range(store, intent)
    _complete_intent(store, intent, size)
    return final


def export_pending(store, out: str | os.PathLike, fmt: str) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """Export every CDR after the checkpoint into one file at `out` (the on-demand export).

    Returns (count, first id, last id); count 0 writes a file with no rows. Refuses an existing `out`.
    """
    formats.check_format(fmt)
    final = Path(out).absolute()
    lock = ExportLock(store.path)
    try:
        recover(store)
        if final.exists():
            raise ExportError(f"{out} already exists (it may hold exported CDRs; choose a new name)")
        if not final.parent.is_dir():
            raise ExportError(f"{final.parent} is not a directory")
        with store.read() as view:
            first, last = checkpoint(view) + 1, last_cdr_id(view)
        if last < first:
            tmp = temp_name(final)
            with open(tmp, "wb") as f:
                formats.write_rows(f, fmt, [])
                os.fsync(f.fileno())
            _seal_file(tmp, final)
            return 0, first, last
        intent = Intent(str(final), fmt, first, last)
        _record_intent(store, intent)
        size = _write_range(store, intent)
        _complete_intent(store, intent, size)
        return last - first + 1, first, last
    finally:
        lock.release()


class CdrExporter:
    """The server's continuous exporter: rotating files under out_dir, sealed exactly once.

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
        self._lock = ExportLock(store.path)
        self.files_sealed = 0
        self.cdrs_exported = 0
        try:
            for junk in self.out_dir.glob(".cdrs-*.part"):
                junk.unlink()
            if recover(store) is not None:
                self.files_sealed += 1
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
