"""The sessions table of the engine's hot state: every record of the SESSIONS db as numpy columns.

The brick after the accounts table (ocs.charging.hot.accounts, whose shape this follows: Codes
for strings, byte arenas, dirty rows, load / record / put_record / checkpoint). A kernel finds a
session's row through `ids` (Session-Id -> row) and reads and writes its integers and its rating
groups' integers in place; the general path works on ocs.charging.sessions.Session records.
LMDB stays the durable store: `load` reads the SESSIONS db, `checkpoint` writes back the changed
rows as exactly Session.pack bytes, with the "session_due" keys sessions.save would leave.

Unlike accounts, sessions end: `delete` (a purged session) frees its row onto a free list that
the next new session takes, so rows stay stable for a kernel and the table does not grow with the
churn. Per row: the scalar fields in one row-major int64 block `ints`, codes for plan / currency
/ origin_host, the three ids in one byte arena (`text`: offset/length pairs), and three list
columns as spans [first, first + count) of an entry pool each (`lists`): seen_above numbers,
kept answers (number, host code, e2e, offset/length of the CCA bytes in `answer_arena`) and
rating-group states (`groups`, one int64 row each).

Groups as spans of a pool rather than a fixed array of 4 per session plus an overflow path: most
sessions have one group, so 4 fixed slots would hold 4x the memory (15 int64 = 120 B each) for
nothing, and an overflow path is a second layout every kernel and the checkpoint must handle. A
span is one layout; a kernel updates a group in place, and only a new rating group in a session
moves its span to the pool's end (what the accounts table does for aliases), the dead entries
going at the next compaction.

Measured (bench.hot_sessions, 100,000 open sessions of one group and two ~300 B answers, 766 B
records): load 1.75 s (sessions.load of every id 1.76 s), arrays 148 MiB (1,555 B a session, 72
MiB of it the kept answers' bytes), record() 16 us, put_record() 33 us (sessions.save 15 us: the
general path; a kernel writes the columns), checkpoint 30 us a row (sessions.save 30 us).
"""

from __future__ import annotations

import gc
import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import chain
from typing import TYPE_CHECKING, Any, Final

import msgpack
import numpy as np
import numpy.typing as npt

from balance.errors import InvalidArgument
from balance.schema import SESSION_DUE, SESSIONS
from ocs.charging.hot.accounts import (
    CHUNK,
    Codes,
    WriteTx,
    _gather,
    _layout,
    _slots_for,
    mark_dirty,
)
from ocs.charging.hot.index import MAX_KEY, Bytes, Int64s, KeyIndex
from ocs.charging.sessions import RatingGroupState, Session, due_key

if TYPE_CHECKING:
    import lmdb

    from balance.views import View

__all__ = ["CHUNK", "SessionsTable", "checkpoint", "delete", "empty", "load", "mark_dirty",
           "put_record", "record", "records", "touch"]

log = logging.getLogger(__name__)

U8s = npt.NDArray[np.uint8]
U16s = npt.NDArray[np.uint16]
I32s = npt.NDArray[np.int32]

# The scalar integers of Session, columns of `ints`, and the record's stored order (Session.pack:
# its field order after session_id; a field added to Session must be added here too).
INT_FIELDS: Final = ("tariff_version", "started", "seen", "due", "state", "closed_at", "seen_low",
                     "filed_state")
CODE_FIELDS: Final = ("plan", "currency", "origin_host")
TEXT_FIELDS: Final = ("session_id", "account_id", "subscription_id")
_STORED: Final = ("account_id", "subscription_id", "plan", "currency", "tariff_version",
                  "origin_host", "started", "seen", "due", "state", "closed_at", "seen_low",
                  "seen_above", "answers", "filed_state", "groups")
if tuple(f.name for f in fields(Session)) != ("session_id", *_STORED):
    raise ImportError(f"SessionsTable does not hold every Session field: {fields(Session)}")
_PROBE = Session("s", "a", "u", "p", "c", 1, "h", 2, 3, 4, 5, 6, 7, [8], [[9, "h", 10, b"x"]], 11,
                 {12: RatingGroupState("t", 13)})
if _PROBE.pack() != msgpack.packb([*(getattr(_PROBE, n) for n in _STORED[:-1]), {12: _PROBE.groups[12].pack()}],
                                  use_bin_type=True):
    raise ImportError("Session.pack no longer packs Session's fields in their order")
_GROUP_FIELDS: Final = tuple(f.name for f in fields(RatingGroupState))
_INT64 = (-(2**63), 2**63 - 1)

I_TARIFF, I_STARTED, I_SEEN, I_DUE, I_STATE, I_CLOSED_AT, I_SEEN_LOW, I_FILED = range(8)
# text: offset/length of each id in text_arena
T_SID, T_SID_LEN, T_ACCT, T_ACCT_LEN, T_SUB, T_SUB_LEN = range(6)
# lists: the spans of the three list columns
L_ABOVE, L_ABOVE_N, L_ANS, L_ANS_N, L_GRP, L_GRP_N = range(6)
# answers (per entry): [request number, origin host code, end-to-end id, bytes offset, length]
A_NUMBER, A_HOST, A_E2E, A_OFF, A_LEN = range(5)
# groups (per entry): the session row, the rating group, then RatingGroupState's fields in order
# (unit as a code, service_identifier -1 for None, the three flags 0/1)
G_SESSION, G_RG, G_UNIT, G_TOTAL, G_MONEY, G_BUNDLE, G_AMOUNT, G_FIRST_TS, G_GRANTED_AT, \
    G_PERIOD_USED, G_SERVICE, G_RESERVED, G_CLOSED, G_GRANTED, G_FEE_PAID = range(15)
G_WIDTH: Final = 15
_FLAGS: Final = (G_RESERVED - G_UNIT, G_CLOSED - G_UNIT, G_FEE_PAID - G_UNIT)  # in g.pack()
_SERVICE: Final = G_SERVICE - G_UNIT
_F1, _F2, _F3 = _FLAGS
if _GROUP_FIELDS[_SERVICE] != "service_identifier" or len(_GROUP_FIELDS) != G_WIDTH - 2 or \
        [_GROUP_FIELDS[i] for i in _FLAGS] != ["reserved", "closed", "fee_paid"]:
    raise ImportError("RatingGroupState's fields moved: the group columns do not match")

# meta: M_ROWS rows ever used (the high-water mark), M_DIRTY rows in dirty_rows (accounts' index,
# so its mark_dirty serves), M_FREE rows in free_rows, then used / dead counts of each pool.
M_ROWS, M_DIRTY, M_FREE, M_TEXT_USED, M_TEXT_DEAD, M_ABOVE_USED, M_ABOVE_DEAD, M_ANS_USED, \
    M_ANS_DEAD, M_ANS_BYTES, M_ANS_BYTES_DEAD, M_GRP_USED, M_GRP_DEAD = range(13)
META_SIZE: Final = 13


@dataclass(slots=True)
class SessionsTable:
    """The columns (per row unless said otherwise), the pools and the id index. Rows
    0..meta[M_ROWS]-1 have been used; `live[row]` says whether one holds a session now (a freed
    row is in free_rows[:meta[M_FREE]]). `filed[row]` is the (due, filed_state) whose
    "session_due" key the store holds for the row's session and `in_store[row]` whether the
    SESSIONS db has it: what the checkpoint compares the record with. `gone` is session id ->
    that (due, filed_state) of the deleted sessions the store still holds; `due_repairs` is due
    key -> True (put) / False (delete) of the disagreements load found (see load)."""

    ints: Int64s          # rows x INT_FIELDS
    plan: I32s
    currency: U16s
    origin_host: I32s
    text: Int64s          # rows x 6 (T_*)
    lists: Int64s         # rows x 6 (L_*)
    filed: Int64s         # rows x 2: the stored key's (due, filed_state)
    in_store: U8s
    live: U8s
    dirty: U8s
    dirty_rows: Int64s
    free_rows: Int64s
    text_arena: Bytes
    above: Int64s         # per entry: a seen_above number
    answers: Int64s       # entries x 5 (A_*)
    answer_arena: Bytes
    groups: Int64s        # entries x G_WIDTH (G_*)
    meta: Int64s
    ids: KeyIndex         # session id (utf-8) -> row
    plans: Codes
    currencies: Codes
    hosts: Codes          # origin hosts, of the sessions and of their answers
    units: Codes
    gone: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    due_repairs: dict[bytes, bool] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows ever used (live or free); row numbers are below it."""
        return int(self.meta[M_ROWS])

    @property
    def capacity(self) -> int:
        return int(self.ints.shape[0])

    def __len__(self) -> int:
        """The sessions held."""
        return self.rows - int(self.meta[M_FREE])

    def nbytes(self) -> int:
        """The memory the table's arrays hold (the index included)."""
        arrays: list[npt.NDArray[Any]] = [getattr(self, n) for n in _ROW_ARRAYS + _POOL_ARRAYS]
        return sum(a.nbytes for a in arrays) + self.meta.nbytes + self.ids.nbytes()

    def row_of(self, session_id: str) -> int | None:
        key = session_id.encode()
        return self.ids.get(key) if 1 <= len(key) <= MAX_KEY else None

    def text_bytes(self, row: int, which: int) -> bytes:
        """One of the row's ids as bytes (which: T_SID, T_ACCT or T_SUB)."""
        off, n = self.text[row, which:which + 2].tolist()
        return bytes(self.text_arena.data[off:off + n])

    def live_rows(self) -> Int64s:
        return np.flatnonzero(self.live[:self.rows]).astype(np.int64)

    def dirty_list(self) -> Int64s:
        """The rows changed since the last checkpoint (a copy; a row freed since may be in it)."""
        return self.dirty_rows[:int(self.meta[M_DIRTY])].copy()


_ROW_ARRAYS: Final = ("ints", "plan", "currency", "origin_host", "text", "lists", "filed",
                      "in_store", "live", "dirty", "dirty_rows", "free_rows")
_POOL_ARRAYS: Final = ("text_arena", "above", "answers", "answer_arena", "groups")
_ROW_SHAPES: Final[dict[str, tuple[type[np.integer[Any]], int]]] = {
    "ints": (np.int64, len(INT_FIELDS)), "plan": (np.int32, 0), "currency": (np.uint16, 0),
    "origin_host": (np.int32, 0), "text": (np.int64, 6), "lists": (np.int64, 6),
    "filed": (np.int64, 2), "in_store": (np.uint8, 0), "live": (np.uint8, 0),
    "dirty": (np.uint8, 0), "dirty_rows": (np.int64, 0), "free_rows": (np.int64, 0)}


def _zeros(n: int, dtype: type[np.integer[Any]], width: int = 0) -> Any:
    return np.zeros((n, width) if width else n, dtype=dtype)


def empty(capacity: int = 16) -> SessionsTable:
    """A table with no session and room for `capacity` rows before the first doubling."""
    n = max(capacity, 1)
    return _allocate(n, KeyIndex.empty(_slots_for(n), 48 * n), 96 * n, n, 2 * n, 512 * n, n)


def _allocate(rows: int, ids: KeyIndex, text_bytes: int, above: int, answers: int,
              answer_bytes: int, groups: int) -> SessionsTable:
    cols = {name: _zeros(rows, dtype, width) for name, (dtype, width) in _ROW_SHAPES.items()}
    return SessionsTable(
        **cols, text_arena=_zeros(text_bytes, np.uint8), above=_zeros(above, np.int64),
        answers=_zeros(answers, np.int64, 5), answer_arena=_zeros(answer_bytes, np.uint8),
        groups=_zeros(groups, np.int64, G_WIDTH), meta=_zeros(META_SIZE, np.int64), ids=ids,
        plans=Codes.of((), np.int32), currencies=Codes.of((), np.uint16),
        hosts=Codes.of((), np.int32), units=Codes.of((), np.int32))


# -- growth and compaction ----------------------------------------------------------------------

def _grown(a: npt.NDArray[Any], need: int, used: int) -> npt.NDArray[Any]:
    """a, or a copy of its first `used` items (rows of a 2-D array) in one doubled until `need` fit."""
    size = max(a.shape[0], 1)
    if need <= a.shape[0]:
        return a
    while size < need:
        size *= 2
    out = np.zeros((size, *a.shape[1:]), dtype=a.dtype)
    out[:used] = a[:used]
    return out


def _reserve_rows(t: SessionsTable, rows: int) -> None:
    used = t.rows
    if used + rows > t.capacity:
        for name in _ROW_ARRAYS:
            setattr(t, name, _grown(getattr(t, name), used + rows, used))


def _span_entries(firsts: Int64s, counts: Int64s) -> tuple[Int64s, Int64s]:
    """The pool entries of the spans laid one after another, and each span's new first."""
    starts = np.zeros(counts.size, dtype=np.int64)
    if counts.size > 1:
        np.cumsum(counts[:-1], out=starts[1:])
    total = int(counts.sum())
    return np.repeat(firsts - starts, counts) + np.arange(total, dtype=np.int64), starts


def _compact_pool(t: SessionsTable, pool: str, col: int, used: int, dead: int) -> None:
    """Lay the live rows' spans of one pool out again in row order (freed rows have count 0)."""
    rows = t.rows
    entries, starts = _span_entries(t.lists[:rows, col], t.lists[:rows, col + 1])
    old = getattr(t, pool)
    new = np.zeros((max(2 * entries.size, 16), *old.shape[1:]), dtype=old.dtype)
    new[:entries.size] = old[entries]
    setattr(t, pool, new)
    t.lists[:rows, col] = starts
    t.meta[used], t.meta[dead] = entries.size, 0


def _compact_bytes(arena: Bytes, offs: Int64s, lens: Int64s) -> tuple[Bytes, Int64s, int]:
    """The spans gathered into a new arena with room: (arena, their new offsets, bytes used)."""
    total = int(lens.sum())
    out = np.zeros(max(2 * total, 64), dtype=np.uint8)
    new_offs = np.zeros(offs.size, dtype=np.int64)
    _gather(arena, np.ascontiguousarray(offs), np.ascontiguousarray(lens), out, new_offs)
    return out, new_offs, total


def _room_text(t: SessionsTable, nbytes: int) -> None:
    used = int(t.meta[M_TEXT_USED])
    if used + nbytes <= t.text_arena.size:
        return
    if t.meta[M_TEXT_DEAD] * 2 > used:
        rows = t.live_rows()
        pairs = t.text[rows].reshape(-1, 2)
        arena, offs, used = _compact_bytes(t.text_arena, pairs[:, 0], pairs[:, 1])
        t.text[rows, 0::2] = offs.reshape(-1, 3)
        t.text_arena = arena
        t.meta[M_TEXT_USED], t.meta[M_TEXT_DEAD] = used, 0
    t.text_arena = _grown(t.text_arena, used + nbytes, used)


def _room_answer_bytes(t: SessionsTable, nbytes: int) -> None:
    used = int(t.meta[M_ANS_BYTES])
    if used + nbytes <= t.answer_arena.size:
        return
    if t.meta[M_ANS_BYTES_DEAD] * 2 > used:
        rows = t.rows
        entries, _ = _span_entries(t.lists[:rows, L_ANS], t.lists[:rows, L_ANS_N])
        arena, offs, used = _compact_bytes(t.answer_arena, t.answers[entries, A_OFF],
                                           t.answers[entries, A_LEN])
        t.answers[entries, A_OFF] = offs
        t.answer_arena = arena
        t.meta[M_ANS_BYTES], t.meta[M_ANS_BYTES_DEAD] = used, 0
    t.answer_arena = _grown(t.answer_arena, used + nbytes, used)


_POOLS: Final = {L_ABOVE: ("above", M_ABOVE_USED, M_ABOVE_DEAD),
                 L_ANS: ("answers", M_ANS_USED, M_ANS_DEAD),
                 L_GRP: ("groups", M_GRP_USED, M_GRP_DEAD)}


def _place(t: SessionsTable, row: int, col: int, values: npt.NDArray[Any]) -> None:
    """Make the row's span of one pool hold `values`: in place when they fit in the old span
    (the rest of it dead), else at the pool's end (the old span dead), compacting first when
    dead entries are over half the used ones and the pool would otherwise grow. (Each numpy
    scalar access costs ~0.3 us here: the in-place path, an update's, makes as few as it can.)"""
    pool, used_m, dead_m = _POOLS[col]
    first, count = t.lists[row, col:col + 2].tolist()
    k = values.shape[0]
    if k <= count:
        if k:
            getattr(t, pool)[first:first + k] = values
        if k != count:
            t.meta[dead_m] += count - k
            t.lists[row, col + 1] = k
        return
    t.meta[dead_m] += count
    t.lists[row, col + 1] = 0  # not live while the pool may be compacted
    used = t.meta.item(used_m)
    if used + k > getattr(t, pool).shape[0] and t.meta[dead_m] * 2 > used:
        _compact_pool(t, pool, col, used_m, dead_m)
        used = t.meta.item(used_m)
    entries = _grown(getattr(t, pool), used + k, used)
    setattr(t, pool, entries)
    entries[used:used + k] = values
    t.meta[used_m] = used + k
    t.lists[row, col:col + 2] = used, k


# -- the dirty marks ----------------------------------------------------------------------------

def touch(t: SessionsTable, row: int) -> None:
    """mark_dirty from Python, after changing a row's columns directly."""
    if not 0 <= row < t.rows or not t.live[row]:
        raise IndexError(f"row {row} holds no session")
    if not t.dirty[row]:
        mark_dirty(t.dirty, t.dirty_rows, t.meta, row)


# -- records ------------------------------------------------------------------------------------

def record(t: SessionsTable, row: int) -> Session:
    """The row as the Session the store holds (or will hold after the next checkpoint)."""
    if not 0 <= row < t.meta.item(M_ROWS) or not t.live.item(row):
        raise IndexError(f"row {row} holds no session")
    ints = t.ints[row].tolist()
    sid, sid_n, acct, acct_n, sub, sub_n, a0, an, s0, sn, g0, gn = \
        t.text[row].tolist() + t.lists[row].tolist()
    mv = t.text_arena.data
    answers: list[list[Any]] = []
    if sn:
        amv, hosts = t.answer_arena.data, t.hosts.names
        answers = [[num, hosts[h], e2e, bytes(amv[o:o + n])]
                   for num, h, e2e, o, n in t.answers[s0:s0 + sn].tolist()]
    groups: dict[int, RatingGroupState] = {}
    if gn:
        units = t.units.names
        for g in t.groups[g0:g0 + gn].tolist():
            groups[g[G_RG]] = RatingGroupState(
                units[g[G_UNIT]], g[G_TOTAL], g[G_MONEY], g[G_BUNDLE], g[G_AMOUNT], g[G_FIRST_TS],
                g[G_GRANTED_AT], g[G_PERIOD_USED], None if g[G_SERVICE] < 0 else g[G_SERVICE],
                g[G_RESERVED] == 1, g[G_CLOSED] == 1, g[G_GRANTED], g[G_FEE_PAID] == 1)
    return Session(
        str(mv[sid:sid + sid_n], "utf-8"), str(mv[acct:acct + acct_n], "utf-8"),
        str(mv[sub:sub + sub_n], "utf-8"), t.plans.names[t.plan.item(row)],
        t.currencies.names[t.currency.item(row)], ints[I_TARIFF],
        t.hosts.names[t.origin_host.item(row)], ints[I_STARTED], ints[I_SEEN], ints[I_DUE],
        ints[I_STATE], ints[I_CLOSED_AT], ints[I_SEEN_LOW], t.above[a0:a0 + an].tolist(), answers,
        ints[I_FILED], groups)


@contextmanager
def _gc_off() -> Iterator[None]:
    """The cyclic GC off while many small lists are made (see load: nothing here makes a cycle,
    and a collection every 700 new containers over the caller's heap cost more than the work)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def records(t: SessionsTable, rows: Sequence[int] | Int64s) -> list[Session]:
    """record() of many rows, in bulk (see _stored)."""
    with _gc_off():
        keys, stored = _stored(t, np.asarray(rows, dtype=np.int64))
        return [Session(k.decode(), f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9],
                        f[10], f[11], f[12], f[13], f[14],
                        {rg: RatingGroupState(*g) for rg, g in f[15].items()})
                for k, f in zip(keys, stored, strict=True)]


def _split(flat: list[Any], counts: list[int]) -> list[list[Any]]:
    out, at = [], 0
    for c in counts:
        out.append(flat[at:at + c])
        at += c
    return out


def _pool_rows(t: SessionsTable, idx: Int64s, col: int, pool: npt.NDArray[Any]) -> tuple[list[Any], list[int]]:
    counts = t.lists[idx, col + 1]
    entries, _ = _span_entries(t.lists[idx, col], counts)
    return pool[entries].tolist(), counts.tolist()


def _stored(t: SessionsTable, idx: Int64s) -> tuple[list[bytes], list[list[Any]]]:
    """The rows' keys and their stored fields: each the list Session.pack packs (groups as
    {rating group: RatingGroupState.pack()}), so msgpack of it is the record's bytes. Each column
    and pool is read once for all the rows (fancy index + tolist), as the accounts' _stored."""
    if idx.size and (idx.min() < 0 or idx.max() >= t.rows or not t.live[idx].all()):
        raise IndexError("a row holds no session")
    ints = t.ints[idx].tolist()
    text = t.text[idx].tolist()
    mv = t.text_arena.data
    plans = map(t.plans.names.__getitem__, t.plan[idx].tolist())
    currencies = map(t.currencies.names.__getitem__, t.currency[idx].tolist())
    hosts = t.hosts.names
    origin = map(hosts.__getitem__, t.origin_host[idx].tolist())
    above, counts = _pool_rows(t, idx, L_ABOVE, t.above)
    aboves = _split(above, counts)
    ans, counts = _pool_rows(t, idx, L_ANS, t.answers)
    amv = t.answer_arena.data
    answers = _split([[num, hosts[h], e2e, bytes(amv[o:o + n])] for num, h, e2e, o, n in ans], counts)
    grp, counts = _pool_rows(t, idx, L_GRP, t.groups)
    units = t.units.names
    groups = [dict(part) for part in _split(
        [(g[G_RG], [units[g[G_UNIT]], *g[G_TOTAL:G_SERVICE], None if g[G_SERVICE] < 0 else g[G_SERVICE],
                    g[G_RESERVED] == 1, g[G_CLOSED] == 1, g[G_GRANTED], g[G_FEE_PAID] == 1])
         for g in grp], counts)]
    keys = [bytes(mv[tx[T_SID]:tx[T_SID] + tx[T_SID_LEN]]) for tx in text]
    stored = [[str(mv[tx[T_ACCT]:tx[T_ACCT] + tx[T_ACCT_LEN]], "utf-8"),
               str(mv[tx[T_SUB]:tx[T_SUB] + tx[T_SUB_LEN]], "utf-8"), plan, currency, i[I_TARIFF],
               host, i[I_STARTED], i[I_SEEN], i[I_DUE], i[I_STATE], i[I_CLOSED_AT], i[I_SEEN_LOW],
               ab, an, i[I_FILED], gr]
              for tx, i, plan, currency, host, ab, an, gr in zip(
                  text, ints, plans, currencies, origin, aboves, answers, groups, strict=True)]
    return keys, stored


def _text(v: object, what: str) -> bytes:
    if not isinstance(v, str):
        raise InvalidArgument(f"{what} {v!r} is not a string")
    try:
        return v.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} {v!r} is not utf-8") from None


def _answer_ints(answers: Iterable[Any], flat: list[Any]) -> None:
    """Check the answers' shape and types; their number and e2e appended to flat (checked there)."""
    for ans in answers:
        if type(ans) is not list or len(ans) != 4 or type(ans[1]) is not str or type(ans[3]) is not bytes:
            raise InvalidArgument(f"an answer is [number, origin host, e2e, bytes], not {ans!r}")
        flat += (ans[0], ans[2])


def _group_ints(groups: Iterable[tuple[Any, list[Any]]], units: list[str], flat: list[Any]) -> None:
    """Check packed groups (rg, RatingGroupState.pack()): exactly the types Session.pack writes
    back as read (a string unit, bools, None or an id >= 0). Their units appended to units, the
    G_WIDTH - 2 integers of each (rg first, None as -1) to flat (checked there)."""
    for rg, p in groups:
        shaped = type(p) is list and len(p) == G_WIDTH - 2
        svc = p[_SERVICE] if shaped else None
        if not shaped or type(p[0]) is not str or type(p[_F1]) is not bool or \
                type(p[_F2]) is not bool or type(p[_F3]) is not bool or \
                (svc is not None and (type(svc) is not int or svc < 0)):
            raise InvalidArgument(f"rating group {rg!r}: {G_WIDTH - 2} fields, unit a string, flags "
                                  f"bools, service_identifier None or >= 0, not {p!r}")
        units.append(p[0])
        flat += (rg, *p[1:_SERVICE], -1 if svc is None else svc, *map(int, p[_SERVICE + 1:]))


def _all_of(kind: type, values: Iterable[Any]) -> bool:
    """Whether every value's type is exactly kind (no bool for int): map(type) runs in C, where a
    generator's test per value cost most of a load's checks."""
    return set(map(type, values)) <= {kind}


def _ints(flat: list[Any], what: str) -> Int64s:
    """flat as int64s, every one an int (not a bool, a float, None) in range."""
    if not _all_of(int, flat):
        raise InvalidArgument(f"{what}: not an int: {next(v for v in flat if type(v) is not int)!r}")
    try:
        return np.array(flat, dtype=np.int64)
    except OverflowError:
        raise InvalidArgument(f"{what}: an integer is not an int64") from None


def put_record(t: SessionsTable, sess: Session) -> int:
    """Insert or update the session's row from a record, exactly as given (the due / filed_state
    it carries are what sessions.save left in it); returns the row, marked dirty. Checks
    everything first, so a refused record changes nothing. Every integer of the record (scalars,
    seen_above, answers' numbers and ids, groups' fields) goes through one numpy array: one call
    checks their int64 range and its slices fill the columns (a call per value cost ~3x more)."""
    key = _text(sess.session_id, "session id")
    if not 1 <= len(key) <= MAX_KEY:
        raise InvalidArgument(f"session id {sess.session_id!r} is not 1..{MAX_KEY} bytes")
    texts = [key, _text(sess.account_id, "account id"), _text(sess.subscription_id, "subscription id")]
    for name in CODE_FIELDS:
        if not isinstance(getattr(sess, name), str):
            raise InvalidArgument(f"{name} {getattr(sess, name)!r} is not a string")
    above, answers, groups = sess.seen_above, sess.answers, sess.groups
    if type(above) is not list or type(answers) is not list or type(groups) is not dict:
        raise InvalidArgument("seen_above and answers are lists, groups a dict")
    flat = [getattr(sess, name) for name in INT_FIELDS]
    flat += above
    _answer_ints(answers, flat)
    units: list[str] = []
    for rg, g in groups.items():
        if not isinstance(g, RatingGroupState):
            raise InvalidArgument(f"rating group {rg!r}: not a RatingGroupState")
    _group_ints(((rg, g.pack()) for rg, g in groups.items()), units, flat)
    ints = _ints(flat, f"session {sess.session_id!r}")

    found = t.ids.get(key)
    if found is None:
        _reserve_rows(t, 1)
        nfree = int(t.meta[M_FREE])
        if nfree:
            row = int(t.free_rows[nfree - 1])
            t.meta[M_FREE] = nfree - 1
        else:
            row = t.rows
            t.meta[M_ROWS] = row + 1
        t.text[row] = 0
        t.lists[row] = 0
        was = t.gone.pop(key, None)  # deleted and back before a checkpoint: the store has it
        t.in_store[row] = was is not None
        t.filed[row] = was or (0, 0)
        t.live[row] = 1
        t.ids.put(key, row)
    else:
        row = found
    n_int, n_above, n_ans = len(INT_FIELDS), len(above), len(answers)
    t.ints[row] = ints[:n_int]
    t.plan[row], t.currency[row], t.origin_host[row] = (
        t.plans.get(sess.plan), t.currencies.get(sess.currency), t.hosts.get(sess.origin_host))
    _set_texts(t, row, texts)
    at = n_int + n_above
    _place(t, row, L_ABOVE, ints[n_int:at])
    _set_answers(t, row, answers)
    at += 2 * n_ans
    width = G_WIDTH - 2
    unit = t.units.get
    block = [(row, flat[g], unit(u), *flat[g + 1:g + width])
             for g, u in zip(range(at, len(flat), width), units, strict=True)]
    _place(t, row, L_GRP, np.array(block, dtype=np.int64).reshape(-1, G_WIDTH))
    touch(t, row)
    return row


def _set_texts(t: SessionsTable, row: int, texts: list[bytes]) -> None:
    spans = t.text[row].tolist()
    mv = t.text_arena.data
    for k, b in enumerate(texts):
        off, n = spans[2 * k], spans[2 * k + 1]
        if n == len(b) and mv[off:off + n] == b:
            continue
        _room_text(t, len(b))  # may compact: the row's other offsets move, none of its bytes
        at = t.meta.item(M_TEXT_USED)
        t.text_arena.data[at:at + len(b)] = b
        t.meta[M_TEXT_DEAD] += n
        t.text[row, 2 * k:2 * k + 2] = at, len(b)
        t.meta[M_TEXT_USED] = at + len(b)
        spans = t.text[row].tolist()
        mv = t.text_arena.data


def _set_answers(t: SessionsTable, row: int, answers: list[list[Any]]) -> None:
    """The answers' entries; the bytes of an answer the row already keeps are not copied again
    (a CCR-U keeps the last answer and adds one: one new CCA's bytes per update). Room for all of
    them is made first, while the row's old entries are live, so a compaction moves them too."""
    _room_answer_bytes(t, sum(len(a[3]) for a in answers))
    first, count = t.lists[row, L_ANS:L_ANS + 2].tolist()
    mv = t.answer_arena.data
    old = {bytes(mv[o:o + n]): (o, n) for o, n in t.answers[first:first + count, A_OFF:].tolist()} \
        if count else {}
    used = at = t.meta.item(M_ANS_BYTES)
    spans: dict[bytes, tuple[int, int]] = {}
    values = []
    host = t.hosts.get
    for num, origin, e2e, raw in answers:
        span = spans.get(raw) or old.get(raw)
        if span is None:
            mv[at:at + len(raw)] = raw
            span = (at, len(raw))
            at += len(raw)
        spans[raw] = span
        values.append((num, host(origin), e2e, *span))
    if at != used:
        t.meta[M_ANS_BYTES] = at
    dead = sum(n for raw, (_, n) in old.items() if raw not in spans)
    if dead:
        t.meta[M_ANS_BYTES_DEAD] += dead
    _place(t, row, L_ANS, np.array(values, dtype=np.int64).reshape(-1, 5))


def delete(t: SessionsTable, session_id: str) -> bool:
    """Forget a session (sessions.purge's change): its row is freed for the next new session,
    and the next checkpoint deletes its record and its "session_due" key. False if not held."""
    key = session_id.encode()
    row = t.ids.get(key) if 1 <= len(key) <= MAX_KEY else None
    if row is None:
        return False
    if t.in_store[row]:
        due, filed_state = t.filed[row].tolist()
        t.gone[key] = (due, filed_state)
    t.meta[M_TEXT_DEAD] += int(t.text[row, 1::2].sum())
    first, count = t.lists[row, L_ANS:L_ANS + 2].tolist()
    t.meta[M_ANS_BYTES_DEAD] += int(t.answers[first:first + count, A_LEN].sum())
    for col, (_, _, dead) in _POOLS.items():
        t.meta[dead] += int(t.lists[row, col + 1])
    t.lists[row] = 0
    t.text[row] = 0
    t.live[row] = 0
    t.in_store[row] = 0
    t.free_rows[int(t.meta[M_FREE])] = row
    t.meta[M_FREE] += 1
    t.ids.delete(key)
    return True


# -- load ---------------------------------------------------------------------------------------

def load(view: View) -> SessionsTable:
    """Every record of the SESSIONS db as a table, in bulk as the accounts table loads (two
    cursor passes, one msgpack call for all the values, columns filled a field at a time, the
    cyclic GC off meanwhile: see ocs.charging.hot.accounts.load).

    The "session_due" db is then checked against the records: sessions.save leaves exactly
    due_key(filed_state, due, id) for each session it saved (it files one whenever it refiles, and
    refiles when due is 0), so that index follows from the records. A disagreement (a key no session files, a session whose key is missing) is logged
    and kept in `due_repairs`, which the next checkpoint writes: the records are the truth here
    (unlike the accounts' alias index, nothing is guessed), and a missing key would otherwise
    leave a session the sweeper never closes or purges."""
    with _gc_off():
        return _load(view)


def _column(values: Iterable[Any], n: int, what: str) -> Int64s:
    values = list(values)
    if not _all_of(int, values):
        bad = next(v for v in values if type(v) is not int)
        raise InvalidArgument(f"a session's {what} {bad!r} is not an int")
    try:
        return np.fromiter(values, dtype=np.int64, count=n)
    except OverflowError:
        raise InvalidArgument(f"a session's {what} is not an int64") from None


def _load(view: View) -> SessionsTable:
    txn, dbs = view.read_txn, view.dbs
    keys = list(txn.cursor(db=dbs[SESSIONS]).iternext(values=False))
    raws = list(txn.cursor(db=dbs[SESSIONS]).iternext(keys=False))
    n = len(keys)
    if len(raws) != n:
        raise RuntimeError("the SESSIONS db changed between two cursor passes of one read txn")
    recs: list[list[Any]] = msgpack.unpackb(b"\xdd" + struct.pack(">I", n) + b"".join(raws),
                                            raw=False, strict_map_key=False)
    del raws
    if any(len(r) != len(_STORED) for r in recs):
        raise InvalidArgument(f"a session record does not have Session's {len(_STORED)} fields")
    cols: dict[str, Any] = dict(zip(_STORED, zip(*recs, strict=True), strict=True)) if n else \
        dict.fromkeys(_STORED, ())
    del recs
    cap = max(16, n + n // 4)
    rows = np.arange(n, dtype=np.int64)

    texts = [keys, *(list(map(str.encode, _strings(cols[name], name))) for name in TEXT_FIELDS[1:])]
    buf, offs, lens = _layout(list(chain.from_iterable(texts)))
    if n and (lens[:n].min() < 1 or lens[:n].max() > MAX_KEY):
        raise InvalidArgument(f"a session id is not 1..{MAX_KEY} bytes")
    ids = KeyIndex.empty(_slots_for(n), max(64, int(lens[:n].sum()) * 5 // 4))
    ids.put_batch(buf, offs[:n], np.zeros(n, dtype=np.int64), lens[:n], rows)

    above_n = np.fromiter(map(len, cols["seen_above"]), dtype=np.int64, count=n)
    above = _column(chain.from_iterable(cols["seen_above"]), int(above_n.sum()), "seen_above")
    ans_n = np.fromiter(map(len, cols["answers"]), dtype=np.int64, count=n)
    flat_ans = list(chain.from_iterable(cols["answers"]))
    ans_ints: list[Any] = []
    _answer_ints(flat_ans, ans_ints)
    ans_pairs = _ints(ans_ints, "a session's answers").reshape(-1, 2)
    grp_n = np.fromiter(map(len, cols["groups"]), dtype=np.int64, count=n)
    grp_units: list[str] = []
    grp_ints: list[Any] = []
    _group_ints(chain.from_iterable(d.items() for d in cols["groups"]), grp_units, grp_ints)
    grp_values = _ints(grp_ints, "a session's rating groups").reshape(-1, G_WIDTH - 2)

    t = _allocate(cap, ids, 0, 0, 0, 0, 0)
    for k, name in enumerate(INT_FIELDS):
        t.ints[:n, k] = _column(cols[name], n, name)
    for name, codes in zip(CODE_FIELDS, (t.plans, t.currencies, t.hosts), strict=True):
        for s in dict.fromkeys(_strings(cols[name], name)):
            codes.get(s)
        getattr(t, name)[:n] = np.fromiter(map(codes.code.__getitem__, cols[name]),
                                           dtype=getattr(t, name).dtype, count=n)
    t.text_arena = _with_room(buf)
    t.text[:n, 0::2] = offs.reshape(3, n).T
    t.text[:n, 1::2] = lens.reshape(3, n).T
    t.meta[M_TEXT_USED] = buf.size

    t.above = _with_room_entries(above)
    t.lists[:n, L_ABOVE_N] = above_n
    t.meta[M_ABOVE_USED] = above.size

    ans_buf, ans_offs, ans_lens = _layout([a[3] for a in flat_ans])
    hosts = [t.hosts.get(a[1]) for a in flat_ans]
    answers = np.zeros((len(flat_ans), 5), dtype=np.int64)
    if flat_ans:
        answers[:, A_NUMBER], answers[:, A_E2E] = ans_pairs[:, 0], ans_pairs[:, 1]
        answers[:, A_HOST] = hosts
        answers[:, A_OFF], answers[:, A_LEN] = ans_offs, ans_lens
    t.answers = _with_room_entries(answers)
    t.answer_arena = _with_room(ans_buf)
    t.lists[:n, L_ANS_N] = ans_n
    t.meta[M_ANS_USED], t.meta[M_ANS_BYTES] = len(flat_ans), ans_buf.size

    groups = np.zeros((len(grp_units), G_WIDTH), dtype=np.int64)
    groups[:, G_SESSION] = np.repeat(rows, grp_n)
    groups[:, G_RG] = grp_values[:, 0]
    groups[:, G_UNIT] = [t.units.get(u) for u in grp_units]
    groups[:, G_TOTAL:] = grp_values[:, 1:]
    t.groups = _with_room_entries(groups)
    t.lists[:n, L_GRP_N] = grp_n
    t.meta[M_GRP_USED] = groups.shape[0]
    for col, counts in ((L_ABOVE, above_n), (L_ANS, ans_n), (L_GRP, grp_n)):
        if n > 1:
            np.cumsum(counts[:-1], out=t.lists[1:n, col])

    t.live[:n] = 1
    t.in_store[:n] = 1
    t.filed[:n, 0] = t.ints[:n, I_DUE]
    t.filed[:n, 1] = t.ints[:n, I_FILED]
    t.meta[M_ROWS] = n
    t.due_repairs = _check_due(t, txn, dbs[SESSION_DUE], keys)
    if t.due_repairs:
        puts = sum(t.due_repairs.values())
        log.warning("the %s db disagrees with the sessions: %d keys missing, %d keys no session "
                    "files (repaired at the next checkpoint), e.g. %r", SESSION_DUE, puts,
                    len(t.due_repairs) - puts, list(t.due_repairs)[:3])
    return t


def _strings(values: Sequence[Any], what: str) -> Sequence[str]:
    if not _all_of(str, values):
        raise InvalidArgument(f"a session's {what} is not a string")
    return values


def _with_room(buf: Bytes) -> Bytes:
    out = np.zeros(buf.size + buf.size // 4 + 64, dtype=np.uint8)
    out[:buf.size] = buf
    return out


def _with_room_entries(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    out = np.zeros((a.shape[0] + a.shape[0] // 4 + 16, *a.shape[1:]), dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


def _filed_keys(t: SessionsTable, rows: Int64s, sids: Sequence[bytes]) -> list[bytes]:
    """due_key of each row's stored (due, filed_state)."""
    dues, states = t.filed[rows, 0].tolist(), t.filed[rows, 1].tolist()
    return [due_key(s, d, sid.decode()) for d, s, sid in zip(dues, states, sids, strict=True)]


def _check_due(t: SessionsTable, txn: lmdb.Transaction[bytes], db: lmdb._Database,
               sids: Sequence[bytes]) -> dict[bytes, bool]:
    want = _filed_keys(t, np.arange(len(sids), dtype=np.int64), sids)
    have = list(txn.cursor(db=db).iternext(values=False))
    if sorted(want) == have:
        return {}
    wanted = set(want)
    stored = set(have)
    return {**{k: False for k in have if k not in wanted}, **{k: True for k in want if k not in stored}}


_pack: Final = msgpack.Packer(use_bin_type=True).pack  # Session.pack's options


# -- checkpoint ---------------------------------------------------------------------------------

def checkpoint(t: SessionsTable, txn_factory: Callable[[Callable[[WriteTx], None]], object],
               chunk: int = CHUNK) -> int:
    """Write the dirty rows into the SESSIONS db (Session.pack of each record) with their
    "session_due" keys, delete the deleted sessions and their keys, write load's due repairs;
    returns the rows written. `txn_factory(fn)` runs fn in one write txn and commits it, `chunk`
    rows per txn, a chunk's marks cleared once it is committed (see the accounts' checkpoint).

    A row's "session_due" key moves as sessions.save moves it: the key the store holds (from
    `filed`) is deleted and the record's own put when they differ, so the db ends with the keys
    the same saves would have left. (One difference, at instant 0 only: sessions.save and purge
    do not delete a key filed with due 0 and leave it for the sweeper; this deletes it.) The deletes and repairs go with the first chunk. The rows go
    in session-id order: rows are reused after deletes, so row order is not key order here, and a
    chunk that is a key range rewrites its leaf pages once (the accounts' measurement)."""
    if chunk < 1:
        raise ValueError(f"chunk is >= 1, not {chunk}")
    listed = t.dirty_list()
    freed = listed[t.live[listed] == 0]
    t.dirty[freed] = 0
    rows = listed[t.live[listed] == 1]
    mv = t.text_arena.data
    sids = [bytes(mv[o:o + n]) for o, n in t.text[rows, T_SID:T_SID + 2].tolist()]
    order = sorted(range(len(sids)), key=sids.__getitem__)
    rows = rows[np.array(order, dtype=np.int64)] if order else rows
    starts = list(range(0, rows.size, chunk)) or ([0] if t.gone or t.due_repairs else [])
    done = 0
    try:
        for i, start in enumerate(starts):
            part = rows[start:start + chunk]
            with _gc_off():
                keys, stored = _stored(t, part)
                items = list(zip(keys, map(_pack, stored), strict=True))
                del stored
            moves: list[tuple[bytes | None, bytes]] = []
            for key, was, filed, due, state in zip(
                    keys, t.in_store[part].tolist(), t.filed[part].tolist(),
                    t.ints[part, I_DUE].tolist(), t.ints[part, I_FILED].tolist(), strict=True):
                text = key.decode()
                old = due_key(filed[1], filed[0], text) if was else None
                new = due_key(state, due, text)
                if old != new:
                    moves.append((old, new))
            gone = dict(t.gone) if i == 0 else {}
            repairs = dict(t.due_repairs) if i == 0 else {}

            def write(tx: WriteTx, items: list[tuple[bytes, bytes]] = items,
                      moves: list[tuple[bytes | None, bytes]] = moves,
                      gone: dict[bytes, tuple[int, int]] = gone,
                      repairs: dict[bytes, bool] = repairs) -> None:
                txn = tx.write_txn
                sessions_db, due_db = tx.dbs[SESSIONS], tx.dbs[SESSION_DUE]
                for key, put in repairs.items():
                    if put:
                        txn.put(key, b"", db=due_db)
                    else:
                        txn.delete(key, db=due_db)
                for sid, (due, filed_state) in gone.items():
                    txn.delete(sid, db=sessions_db)
                    txn.delete(due_key(filed_state, due, sid.decode()), db=due_db)
                for key, value in items:
                    txn.put(key, value, db=sessions_db)
                for old, new in moves:
                    if old is not None:
                        txn.delete(old, db=due_db)
                    txn.put(new, b"", db=due_db)

            txn_factory(write)
            t.dirty[part] = 0
            t.in_store[part] = 1
            t.filed[part, 0] = t.ints[part, I_DUE]
            t.filed[part, 1] = t.ints[part, I_FILED]
            done += part.size
            for sid, v in gone.items():
                if t.gone.get(sid) == v:
                    del t.gone[sid]
            for key in repairs:
                t.due_repairs.pop(key, None)
    finally:
        left = rows[done:]
        t.dirty_rows[:left.size] = left
        t.meta[M_DIRTY] = left.size
    return done
