"""The engine's journal: one record per batch, durable before any answer of the batch leaves.

The charging engine keeps its hot state in memory; what makes a batch durable is one append here
(one LMDB write txn with MDB_APPEND, data and meta synced) instead of today's ~60 scattered page
writes per batch in the main environment (engine-measurements.md: the commit was 12 us of a
CCR-U's 76). The state in the main environment is a checkpoint that records the journal position
it covers; recovery loads the checkpoint and replays the records after that position, and a
record is deleted only once a durable checkpoint covers it (`truncate_through`).

It is an LMDB environment of its own (DATA/journal/) because LMDB allows one writer per
environment: the checkpointer writes the main environment while batches keep appending here.

Positions are 1, 2, 3 ... without gaps and never reused (the journal remembers how far it was
truncated, so an empty journal still continues from its last position). Each value is a CRC-32
(4 bytes, big-endian) then the payload: LMDB never leaves half a record, but a flipped bit on the
disk or a bug in a copy would otherwise be replayed as a different batch. Reading stops at the
first record that fails its check or breaks the sequence (JournalCorrupt): records after a bad
one are never applied without it.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator

import lmdb

RECORDS = b"records"     # be8 position -> CRC-32 (4 bytes BE) + payload
META = b"meta"           # the fixed keys below
TRUNCATED = b"truncated"  # be8: the last position deleted by truncate_through (0: none)

_BE8 = struct.Struct(">Q")
_CRC = struct.Struct(">I")
START_MAP_SIZE = 64 << 20
MAX_GROWTHS = 16
TRUNCATE_CHUNK = 4096  # records deleted per txn, so a long truncation never holds the writer long


class JournalCorrupt(Exception):
    """A record fails its CRC or the positions have a gap: `position` is the first bad one."""

    def __init__(self, position: int, why: str) -> None:
        super().__init__(f"journal record {position}: {why}")
        self.position = position


class JournalFull(Exception):
    """The journal cannot grow (max_map_size reached or the disk refuses)."""


def _frame(payload: bytes) -> bytes:
    return _CRC.pack(zlib.crc32(payload)) + payload


class Journal:
    """Append-only batch records; the methods are blocking (the engine calls them off the loop)."""

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True,
                 max_map_size: int = 64 << 30) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        self.max_map_size = max_map_size
        self.env = lmdb.open(self.path, map_size=min(START_MAP_SIZE, max_map_size), max_dbs=2,
                             sync=sync, metasync=sync, max_readers=16, lock=True)
        self.records = self.env.open_db(RECORDS)
        self.meta = self.env.open_db(META)
        with self.env.begin() as txn:
            cur = txn.cursor(self.records)
            raw = txn.get(TRUNCATED, db=self.meta)
            self.truncated = _BE8.unpack(raw)[0] if raw else 0
            self.last = _BE8.unpack(cur.key())[0] if cur.last() else self.truncated

    def append(self, payloads: list[bytes]) -> int:
        """Append the records in one txn; durable when it returns. Returns the last position."""
        if not payloads:
            return self.last
        first = self.last + 1
        items = [(_BE8.pack(first + i), _frame(p)) for i, p in enumerate(payloads)]
        for _ in range(MAX_GROWTHS):
            try:
                with self.env.begin(write=True) as txn:
                    cur = txn.cursor(self.records)
                    for k, v in items:
                        if not cur.put(k, v, append=True):
                            raise JournalCorrupt(first, "position already taken")  # pragma: no cover
            except lmdb.MapFullError:
                self._grow()
                continue
            self.last = first + len(items) - 1
            return self.last
        raise JournalFull(f"{self.path}: {len(payloads)} records do not fit after {MAX_GROWTHS} growths")

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """(position, payload) of every record after `after`, checked; JournalCorrupt at the first
        bad one. Reading from before the truncation point is refused (those records are gone)."""
        if after < self.truncated:
            raise JournalCorrupt(after + 1, f"truncated through {self.truncated}: records are gone")
        expect = after + 1
        with self.env.begin(buffers=True) as txn:
            cur = txn.cursor(self.records)
            if not cur.set_range(_BE8.pack(expect)):
                return
            for k, v in cur:
                pos = _BE8.unpack(k)[0]
                if pos != expect:
                    raise JournalCorrupt(expect, f"missing (next record is {pos})")
                if len(v) < 4 or _CRC.unpack_from(v)[0] != zlib.crc32(v[4:]):
                    raise JournalCorrupt(pos, "CRC mismatch")
                yield pos, bytes(v[4:])
                expect += 1

    def truncate_through(self, position: int) -> int:
        """Delete the records up to `position` (a durable checkpoint covers them); returns how many."""
        position = min(position, self.last)
        gone = 0
        while self.truncated < position:
            upto = min(position, self.truncated + TRUNCATE_CHUNK)
            with self.env.begin(write=True) as txn:
                cur = txn.cursor(self.records)
                if cur.first():
                    while _BE8.unpack(cur.key())[0] <= upto:
                        gone += 1
                        if not cur.delete() or cur.key() == b"":
                            break
                txn.put(TRUNCATED, _BE8.pack(upto), db=self.meta)
            self.truncated = upto
        return gone

    def cut_from(self, position: int) -> int:
        """Delete the records from `position` on (a corrupt tail found by read); returns how many.
        The caller logs it: these records were acknowledged once."""
        gone = 0
        with self.env.begin(write=True) as txn:
            cur = txn.cursor(self.records)
            if cur.set_range(_BE8.pack(position)):
                while cur.key() != b"":
                    gone += 1
                    if not cur.delete():
                        break
        self.last = max(self.truncated, position - 1) if gone else self.last
        return gone

    def _grow(self) -> None:
        current = self.env.info()["map_size"]
        if current >= self.max_map_size:
            raise JournalFull(f"{self.path}: journal full at {current} bytes (max_map_size)")
        try:
            self.env.set_mapsize(min(current * 2, self.max_map_size))
        except lmdb.Error as exc:
            raise JournalFull(f"{self.path}: cannot grow the journal: {exc}") from None

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
