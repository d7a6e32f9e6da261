"""A hash index from byte strings to int64 values in plain numpy arrays, for the numba fast path.

A kernel must find, for each request of a batch, the row of its session (by Session-Id) and of its
account (by alias) without leaving numba: a Python dict would need a bytes object per key and a
trip back to the interpreter, and millions of Python objects bring GC stalls
(engine-measurements.md). So the index is three arrays a kernel is handed, and that a checkpoint
can write and read back as they are:

- `slots` (capacity x 4 int64, capacity a power of two): S_HASH, S_VALUE, S_OFF (key offset in the
  arena), S_LEN (key length; EMPTY or TOMBSTONE for a slot without a key);
- `arena` (uint8): the keys' bytes, appended; a deleted key's bytes stay until a rebuild;
- `meta` (int64): M_LIVE keys, M_TOMBSTONES, M_USED arena bytes, M_DEAD bytes of deleted keys,
  M_HASH_MASK (all ones; a test narrows it to force colliding hashes).

Open addressing with linear probing: the next probe is the next 32-byte row, in the same or the
next cache line, and the full hash is compared before any key byte. The load (keys + tombstones)
is held at or under 3/4 so a probe sequence always ends on an empty slot (a hit probes <= 2.5
slots on average, a miss <= 8.5). No kernel resizes an array: an insert that would go over the
load or past the arena returns False, and the caller grows (a rebuild into new arrays, from Python
between batches) and retries. Keys are byte-exact, 1..MAX_KEY bytes; values are >= 0 (-1 = absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

MAX_KEY: Final = 511  # Session-Id is up to 400 bytes here, an alias up to 253
S_HASH, S_VALUE, S_OFF, S_LEN = 0, 1, 2, 3
EMPTY: Final = -1
TOMBSTONE: Final = -2
M_LIVE, M_TOMBSTONES, M_USED, M_DEAD, M_HASH_MASK = 0, 1, 2, 3, 4
META_SIZE: Final = 5
LOAD_NUM, LOAD_DEN = 3, 4

Int = int | np.int64  # what the kernels compute with (numba types both as int64)
Bytes = npt.NDArray[np.uint8]
Int64s = npt.NDArray[np.int64]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


@njit(cache=True, inline="always")
def key_hash(buf: Bytes, off: Int, n: Int) -> np.int64:
    """FNV-1a over the key's bytes, then murmur3's fmix64.

    FNV-1a because it reads one byte at a time: a key is any (offset, length) span of a batch
    buffer, so there is no alignment to mind, no read past the key and no tail to handle, in a
    dozen lines numba compiles to a tight loop (Session-Ids are ~40 bytes). Its low bits mix
    weakly (bit 0 is the parity of the bytes' bit 0), and the slot is taken from the low bits, so
    fmix64 spreads every input bit over all of them (Session-Ids differ only in their last digits).
    """
    h = _FNV_OFFSET
    for i in range(off, off + n):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    h ^= h >> _S33
    h *= _MIX1
    h ^= h >> _S33
    h *= _MIX2
    h ^= h >> _S33
    return np.int64(h)


@njit(cache=True, inline="always")
def _same(arena: Bytes, at: Int, buf: Bytes, off: Int, n: Int) -> bool:
    j = 0
    while j < n and arena[at + j] == buf[off + j]:
        j += 1
    return j == n


@njit(cache=True, inline="always")
def _find(slots: Int64s, arena: Bytes, h: Int, buf: Bytes, off: Int, n: Int) -> Int:
    """The slot holding the key, or -1."""
    mask = slots.shape[0] - 1
    i: Int = h & mask
    while True:
        size = slots[i, S_LEN]
        if size == EMPTY:
            return -1
        if size == n and slots[i, S_HASH] == h and _same(arena, slots[i, S_OFF], buf, off, n):
            return i
        i = (i + 1) & mask


@njit(cache=True)
def lookup(slots: Int64s, arena: Bytes, meta: Int64s, buf: Bytes, off: Int, n: Int) -> Int:
    """The value of the key buf[off:off+n], or -1."""
    i = _find(slots, arena, key_hash(buf, off, n) & meta[M_HASH_MASK], buf, off, n)
    if i < 0:
        return -1
    value: Int = slots[i, S_VALUE]
    return value


@njit(cache=True)
def insert(slots: Int64s, arena: Bytes, meta: Int64s, buf: Bytes, off: Int, n: Int,
           value: Int) -> bool:
    """Set the key buf[off:off+n] to value (>= 0); False (and nothing changed) if a new key would
    take the load over 3/4 or the arena past its end: grow, then retry."""
    h = key_hash(buf, off, n) & meta[M_HASH_MASK]
    mask = slots.shape[0] - 1
    i = h & mask
    free = -1  # the first tombstone on the way: a new key reuses it
    while True:
        size = slots[i, S_LEN]
        if size == EMPTY:
            break
        if size == TOMBSTONE:
            if free < 0:
                free = i
        elif size == n and slots[i, S_HASH] == h and _same(arena, slots[i, S_OFF], buf, off, n):
            slots[i, S_VALUE] = value
            return True
        i = (i + 1) & mask
    if free < 0 and (meta[M_LIVE] + meta[M_TOMBSTONES] + 1) * LOAD_DEN > slots.shape[0] * LOAD_NUM:
        return False
    at = meta[M_USED]
    if at + n > arena.size:
        return False
    if free >= 0:
        i = free
        meta[M_TOMBSTONES] -= 1
    for j in range(n):
        arena[at + j] = buf[off + j]
    slots[i, S_HASH], slots[i, S_VALUE], slots[i, S_OFF], slots[i, S_LEN] = h, value, at, n
    meta[M_LIVE] += 1
    meta[M_USED] = at + n
    return True


@njit(cache=True)
def delete(slots: Int64s, arena: Bytes, meta: Int64s, buf: Bytes, off: Int, n: Int) -> bool:
    """Remove the key buf[off:off+n]; False if it was not there. Its bytes stay in the arena
    (counted in M_DEAD) until a rebuild."""
    i = _find(slots, arena, key_hash(buf, off, n) & meta[M_HASH_MASK], buf, off, n)
    if i < 0:
        return False
    mask = slots.shape[0] - 1
    slots[i, S_VALUE] = -1
    meta[M_LIVE] -= 1
    meta[M_DEAD] += n
    if slots[(i + 1) & mask, S_LEN] != EMPTY:
        slots[i, S_LEN] = TOMBSTONE  # a probe sequence may run through this slot
        meta[M_TOMBSTONES] += 1
        return True
    # No sequence runs past an empty slot: this one, and the tombstones just before it, end none.
    slots[i, S_LEN] = EMPTY
    i = (i - 1) & mask
    while slots[i, S_LEN] == TOMBSTONE:
        slots[i, S_LEN] = EMPTY
        meta[M_TOMBSTONES] -= 1
        i = (i - 1) & mask
    return True


@njit(cache=True)
def lookup_batch(slots: Int64s, arena: Bytes, meta: Int64s, buf: Bytes, starts: Int64s,
                 offs: Int64s, lens: Int64s, out: Int64s) -> None:
    """out[k] = the value of the key buf[starts[k] + offs[k]:][:lens[k]], or -1 (also where
    lens[k] <= 0: the scanner's absent field). starts/offs/lens are ccr_batch's frame starts and a
    text slot's (offset, length) columns of its rows.

    In passes over the batch (the hashes; each home slot's row; the first byte of the key it
    holds; then the compares and probes) so that the cache misses of different keys overlap: with
    a million keys the arrays are 128 MiB and a key's slot row and bytes are two misses; one key
    at a time took 410 ns a key here, in passes 200 (the hash itself is 35)."""
    mask = slots.shape[0] - 1
    hash_mask = meta[M_HASH_MASK]
    at = np.empty(out.size, dtype=np.int64)  # the home slot's key offset if it may be the key
    for k in range(out.size):
        if lens[k] > 0:
            out[k] = key_hash(buf, starts[k] + offs[k], lens[k]) & hash_mask
    for k in range(out.size):
        at[k] = -1
        if lens[k] > 0:
            i = out[k] & mask
            if slots[i, S_LEN] == lens[k] and slots[i, S_HASH] == out[k]:
                at[k] = slots[i, S_OFF]
    for k in range(out.size):
        if at[k] >= 0 and arena[at[k]] != buf[starts[k] + offs[k]]:
            at[k] = -1
    for k in range(out.size):
        n = lens[k]
        if n <= 0:
            out[k] = -1
            continue
        off = starts[k] + offs[k]
        h = out[k]
        i = h & mask
        if at[k] < 0 or not _same(arena, at[k], buf, off, n):
            i = _find(slots, arena, h, buf, off, n)
        out[k] = -1 if i < 0 else slots[i, S_VALUE]


@njit(cache=True)
def insert_batch(slots: Int64s, arena: Bytes, meta: Int64s, buf: Bytes, starts: Int64s,
                 offs: Int64s, lens: Int64s, values: Int64s, first: Int) -> Int:
    """Insert keys first.. of a batch (addressed as in lookup_batch); returns how many were done
    from first on before one needed the index to grow (the caller grows and calls again from
    there), so a batch never fails half-way unseen."""
    done = 0
    for k in range(first, lens.size):
        if not insert(slots, arena, meta, buf, starts[k] + offs[k], lens[k], values[k]):
            break
        done += 1
    return done


@njit(cache=True)
def _move(slots: Int64s, arena: Bytes, new_slots: Int64s, new_arena: Bytes,
          new_meta: Int64s) -> None:
    """Every live key into empty new arrays, by its stored hash (keys are distinct: no compare)."""
    mask = new_slots.shape[0] - 1
    at = 0
    live = 0
    for s in range(slots.shape[0]):
        n = slots[s, S_LEN]
        if n < 0:
            continue
        h = slots[s, S_HASH]
        i = h & mask
        while new_slots[i, S_LEN] != EMPTY:
            i = (i + 1) & mask
        off = slots[s, S_OFF]
        for j in range(n):
            new_arena[at + j] = arena[off + j]
        new_slots[i, S_HASH], new_slots[i, S_VALUE] = h, slots[s, S_VALUE]
        new_slots[i, S_OFF], new_slots[i, S_LEN] = at, n
        at += n
        live += 1
    new_meta[M_LIVE], new_meta[M_USED] = live, at


def _fits(keys: int, capacity: int) -> bool:
    return keys * LOAD_DEN <= capacity * LOAD_NUM


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"a key is bytes, not {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KEY:
        raise ValueError(f"a key is 1..{MAX_KEY} bytes, not {len(key)}")


def _key_array(key: bytes) -> Bytes:
    _check_key(key)
    return np.frombuffer(key, dtype=np.uint8)


@dataclass(slots=True)
class KeyIndex:
    """The index's arrays, with the general path's methods (one numba call per key, ~1 us: for
    tests, tools and between batches; a kernel calls lookup/insert/delete on the arrays itself).
    A rebuild replaces the arrays, so a kernel is handed them afresh for each batch."""

    slots: Int64s
    arena: Bytes
    meta: Int64s

    @classmethod
    def empty(cls, capacity: int = 16, arena_bytes: int = 1024) -> KeyIndex:
        """An empty index of `capacity` slots (a power of two >= 4) and `arena_bytes` of keys."""
        if capacity < 4 or capacity & (capacity - 1):
            raise ValueError(f"capacity is a power of two >= 4, not {capacity}")
        if arena_bytes < 0:
            raise ValueError(f"arena_bytes is >= 0, not {arena_bytes}")
        return cls(*_arrays(capacity, arena_bytes))

    @property
    def capacity(self) -> int:
        return int(self.slots.shape[0])

    def __len__(self) -> int:
        return int(self.meta[M_LIVE])

    def nbytes(self) -> int:
        """The memory the index holds (its arrays)."""
        return int(self.slots.nbytes + self.arena.nbytes + self.meta.nbytes)

    def get(self, key: bytes) -> int | None:
        k = _key_array(key)
        v = int(lookup(self.slots, self.arena, self.meta, k, 0, k.size))
        return None if v < 0 else v

    def put(self, key: bytes, value: int) -> None:
        k = _key_array(key)
        if not 0 <= value < 2**63:
            raise ValueError(f"a value is 0..2**63-1 (-1 means absent), not {value}")
        while not insert(self.slots, self.arena, self.meta, k, 0, k.size, value):
            self.grow(1, k.size)

    def delete(self, key: bytes) -> bool:
        """Remove key; False if it was not there. Compacts when deleted keys' bytes pass half the
        arena's used bytes (a kernel's deletes leave that to compact_if_needed between batches)."""
        k = _key_array(key)
        found = bool(delete(self.slots, self.arena, self.meta, k, 0, k.size))
        self.compact_if_needed()
        return found

    def items(self) -> Iterator[tuple[bytes, int]]:
        for s in np.flatnonzero(self.slots[:, S_LEN] >= 0):
            off, n = int(self.slots[s, S_OFF]), int(self.slots[s, S_LEN])
            yield self.arena[off:off + n].tobytes(), int(self.slots[s, S_VALUE])

    def lookup_batch(self, buf: Bytes, starts: Int64s, offs: Int64s, lens: Int64s) -> Int64s:
        out = np.empty(lens.size, dtype=np.int64)
        lookup_batch(self.slots, self.arena, self.meta, buf, starts, offs, lens, out)
        return out

    def put_batch(self, buf: Bytes, starts: Int64s, offs: Int64s, lens: Int64s,
                  values: Int64s) -> None:
        """Insert a batch of keys (refused like put's: the kernel never checks them)."""
        if lens.size and (lens.min() < 1 or lens.max() > MAX_KEY):
            raise ValueError(f"a key is 1..{MAX_KEY} bytes")
        if values.size != lens.size or (values.size and values.min() < 0):
            raise ValueError("one value >= 0 per key")
        first = 0
        while first < lens.size:
            first += int(insert_batch(self.slots, self.arena, self.meta, buf, starts, offs, lens,
                                      values, first))
            if first < lens.size:
                self.grow(lens.size - first, int(lens[first:].sum()))

    def room(self, keys: int, key_bytes: int) -> bool:
        """Whether `keys` new keys of `key_bytes` bytes in all go in without a grow (the check
        before a batch whose kernel inserts)."""
        used = int(self.meta[M_LIVE] + self.meta[M_TOMBSTONES])
        return _fits(used + keys, self.capacity) and self.meta[M_USED] + key_bytes <= self.arena.size

    def grow(self, keys: int = 1, key_bytes: int = MAX_KEY) -> None:
        """Rebuild so `keys` new keys of `key_bytes` bytes in all go in; from Python, between
        batches, never inside a kernel call. The slot table doubles (more than once if needed);
        it keeps its size when dropping the tombstones makes the room and they are at least half
        the occupied slots, so a churn of sessions (as many ended as started) does not double it
        forever. The arena is compacted, and doubled until a quarter of it stays free.
        Both leave as much room again as is used, so inserting n keys costs O(n) in all."""
        live, tombstones = int(self.meta[M_LIVE]), int(self.meta[M_TOMBSTONES])
        capacity = self.capacity
        if _fits(live + tombstones + keys, capacity):
            pass  # the slots have room (the arena is short)
        elif tombstones >= live and _fits(live + keys, capacity):
            pass  # dropping the tombstones makes the room
        else:
            capacity *= 2
            while not _fits(live + keys, capacity):
                capacity *= 2
        need = int(self.meta[M_USED] - self.meta[M_DEAD]) + key_bytes
        arena_bytes = max(self.arena.size, 64)
        while need * 4 > arena_bytes * 3:
            arena_bytes *= 2
        self._rebuild(capacity, arena_bytes)

    def compact_if_needed(self) -> bool:
        """Compact the arena when deleted keys' bytes exceed half its used bytes: a rebuild at the
        same sizes (tombstones go too); True if it ran."""
        if self.meta[M_DEAD] * 2 <= self.meta[M_USED]:
            return False
        self._rebuild(self.capacity, int(self.arena.size))
        return True

    def _rebuild(self, capacity: int, arena_bytes: int) -> None:
        slots, arena, meta = _arrays(capacity, arena_bytes)
        meta[M_HASH_MASK] = self.meta[M_HASH_MASK]
        _move(self.slots, self.arena, slots, arena, meta)
        self.slots, self.arena, self.meta = slots, arena, meta


def _arrays(capacity: int, arena_bytes: int) -> tuple[Int64s, Bytes, Int64s]:
    slots = np.zeros((capacity, 4), dtype=np.int64)
    slots[:, S_LEN] = EMPTY
    meta = np.zeros(META_SIZE, dtype=np.int64)
    meta[M_HASH_MASK] = -1
    return slots, np.zeros(arena_bytes, dtype=np.uint8), meta
