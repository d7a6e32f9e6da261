"""The accounts table of the engine's hot state: every account of the ACCOUNTS db as numpy columns.

A batch kernel reads and writes an account's balance and reserved money by row, found through the
`ids` or `aliases` KeyIndex, with no Python object per account (millions of them bring GC stalls,
engine-measurements.md). The general path (the CLI's changes, the rare request numba leaves to
Python) works on balance.records.Account: `record` builds one from a row and `put_record` writes
one back. LMDB stays the durable store: `load` reads the ACCOUNTS db at start, `checkpoint` writes
back the rows changed since the last one, a chunk of rows per write txn, each value exactly
Account.pack of the row's record (the on-disk format does not change).

Columns: the nine integers of the record are int64 columns of one row-major block `ints`
(balance, reserved ... are views of it): a row's money is then one or two cache lines for a kernel
instead of one line per column, and record() / put_record() move a row's integers in one numpy
call instead of nine (a numpy scalar access costs ~100 ns here). The three strings are codes into
a lookup list each (a code per distinct string, appended as new ones appear; statuses are seeded
with balance.records.STATUSES so a kernel may test `status == ACTIVE`); the ids and aliases are
bytes in arenas with offset/length columns. An account keeps its row for good (accounts are never deleted,
`closed` is a status). A row's aliases are entries [alias_first, alias_first + alias_count) of
the alias columns; changing them appends new entries and leaves the old ones dead until a
compaction. Every per-row array has the same capacity, doubled from Python when full, so a kernel
never allocates; it is handed the arrays afresh after a growth.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from itertools import chain, pairwise
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgpack
import numpy as np
import numpy.typing as npt
from numba import njit

from balance.errors import DuplicateAccount, InvalidArgument
from balance.records import STATUSES, Account, pack, text_key
from balance.schema import ACCOUNTS, ALIASES
from ocs.charging.hot.index import MAX_KEY, Bytes, Int, Int64s, KeyIndex

if TYPE_CHECKING:
    import lmdb

    from balance.views import View

U8s = npt.NDArray[np.uint8]
U16s = npt.NDArray[np.uint16]
I32s = npt.NDArray[np.int32]

# The integer fields of Account, one int64 column each, and the record's stored order (the msgpack
# array after the id: balance.records' dataclass field order, which Account.unpack relies on too).
INT_FIELDS: Final = ("balance", "credit_limit", "reserved", "created", "updated", "seq",
                     "bundle_seq", "nbundles", "ledger_tail")
CODE_FIELDS: Final = ("currency", "plan", "status")
_STORED: Final = tuple(f.name for f in fields(Account))[1:]
if set(_STORED) != {*INT_FIELDS, *CODE_FIELDS, "aliases"}:  # a field appended to Account
    raise ImportError(f"AccountsTable does not hold every Account field: {_STORED}")
_DEFAULTS: Final = tuple(f.default if f.default is not MISSING else None for f in fields(Account))[1:]
_PROBE = Account("i", "c", 1, 2, 3, "p", "s", ["a"], 4, 5, 6, 7, 8, 9)
if _PROBE.pack() != pack([getattr(_PROBE, name) for name in _STORED]):
    # checkpoint packs the stored fields in field order, as Account.pack does: keep them one
    raise ImportError("Account.pack no longer packs Account's fields in their order")
_INT64 = (-(2**63), 2**63 - 1)

ACTIVE: Final = STATUSES.index("active")  # the status code of an active account (0)
# meta: M_ROWS rows in use, M_DIRTY rows in dirty_rows, M_ID_USED bytes of id_arena, M_ENTRIES
# alias entries in use, M_ALIAS_USED bytes of alias_arena, M_DEAD entries no row points at.
M_ROWS, M_DIRTY, M_ID_USED, M_ENTRIES, M_ALIAS_USED, M_DEAD = range(6)
META_SIZE: Final = 6
CHUNK: Final = 4096  # rows per checkpoint write txn (see checkpoint)


@dataclass(slots=True)
class Codes:
    """One string column's lookup: names[code] is the string; codes are handed out in order of
    first appearance and never reused, so a code in a column stays valid as names grows."""

    names: list[str]
    code: dict[str, int]
    limit: int  # codes fit the column's dtype below this

    @classmethod
    def of(cls, names: Iterable[str], dtype: type[np.integer[Any]]) -> Codes:
        distinct = list(dict.fromkeys(names))
        return cls(distinct, {s: i for i, s in enumerate(distinct)}, int(np.iinfo(dtype).max) + 1)

    def get(self, name: str) -> int:
        c = self.code.get(name)
        if c is None:
            if not isinstance(name, str):
                raise InvalidArgument(f"not a string: {name!r}")
            if len(self.names) >= self.limit:
                raise InvalidArgument(f"more than {self.limit} distinct values")
            c = self.code[name] = len(self.names)
            self.names.append(name)
        return c


@dataclass(slots=True)
class AccountsTable:
    """The columns (per row unless said otherwise) and the two indexes. The nine integer columns
    are views of `ints` (rows x INT_FIELDS), rebound when it grows. Rows 0..rows-1 are in use;
    the arrays are longer (the capacity). `dirty[row]` is 1 for a row changed since the last
    checkpoint and `dirty_rows[:meta[M_DIRTY]]` lists those rows once each, in the order they were
    first changed: a kernel marks a row with `mark_dirty` (the mark and the list are arrays so a
    kernel can keep them), and a checkpoint writes only those. `alias_changes` is alias -> row,
    or -1 for a removed alias, since the last checkpoint: what the ALIASES db still needs."""

    ints: Int64s
    balance: Int64s
    credit_limit: Int64s
    reserved: Int64s
    created: Int64s
    updated: Int64s
    seq: Int64s
    bundle_seq: Int64s
    nbundles: Int64s
    ledger_tail: Int64s
    currency: U16s
    plan: I32s
    status: U8s
    id_off: Int64s
    id_len: Int64s
    alias_first: Int64s
    alias_count: Int64s
    dirty: U8s
    dirty_rows: Int64s
    id_arena: Bytes
    alias_off: Int64s    # per alias entry
    alias_len: Int64s    # per alias entry
    alias_arena: Bytes
    meta: Int64s
    ids: KeyIndex        # account id (utf-8) -> row
    aliases: KeyIndex    # alias (utf-8) -> row
    currencies: Codes
    plans: Codes
    statuses: Codes
    alias_changes: dict[bytes, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.meta[M_ROWS])

    @property
    def capacity(self) -> int:
        return int(self.ints.shape[0])

    def __len__(self) -> int:
        return self.rows

    def nbytes(self) -> int:
        """The memory the table's arrays hold (both indexes included)."""
        arrays: list[npt.NDArray[Any]] = [getattr(self, n) for n in ROW_COLUMNS + ENTRY_COLUMNS]
        return (sum(a.nbytes for a in arrays) + self.ints.nbytes + self.id_arena.nbytes + self.alias_arena.nbytes
                + self.meta.nbytes + self.ids.nbytes() + self.aliases.nbytes())

    def row_of(self, ident: str) -> int | None:
        """The row of an account id or alias (the id first, as View.resolve), or None."""
        key = ident.encode()
        if not 1 <= len(key) <= MAX_KEY:
            return None
        row = self.ids.get(key)
        return self.aliases.get(key) if row is None else row

    def id_bytes(self, row: int) -> bytes:
        off = self.id_off.item(row)
        return bytes(self.id_arena.data[off:off + self.id_len.item(row)])

    def alias_bytes(self, row: int) -> list[bytes]:
        count = self.alias_count.item(row)
        if not count:
            return []
        first, mv = self.alias_first.item(row), self.alias_arena.data
        if count == 1:  # the common case, without the loop's setup
            off = self.alias_off.item(first)
            return [bytes(mv[off:off + self.alias_len.item(first)])]
        offs = self.alias_off[first:first + count].tolist()
        lens = self.alias_len[first:first + count].tolist()
        return [bytes(mv[o:o + n]) for o, n in zip(offs, lens, strict=True)]

    def dirty_list(self) -> Int64s:
        """The rows changed since the last checkpoint (a copy)."""
        return self.dirty_rows[:int(self.meta[M_DIRTY])].copy()


ROW_COLUMNS: Final = (*CODE_FIELDS, "id_off", "id_len", "alias_first", "alias_count",
                      "dirty", "dirty_rows")
ENTRY_COLUMNS: Final = ("alias_off", "alias_len")
_DTYPES: Final[dict[str, type[np.integer[Any]]]] = {
    "currency": np.uint16, "plan": np.int32,
    "status": np.uint8, "id_off": np.int64, "id_len": np.int64, "alias_first": np.int64,
    "alias_count": np.int64, "dirty": np.uint8, "dirty_rows": np.int64, "alias_off": np.int64,
    "alias_len": np.int64}


def empty(capacity: int = 16) -> AccountsTable:
    """A table with no account and room for `capacity` rows before the first doubling."""
    return _allocate(max(capacity, 1), max(capacity, 1), 64 * max(capacity, 1),
                     32 * max(capacity, 1), KeyIndex.empty(_slots_for(capacity), 32 * capacity),
                     KeyIndex.empty(_slots_for(capacity), 32 * capacity))


def _allocate(rows: int, entries: int, id_bytes: int, alias_bytes: int, ids: KeyIndex,
              aliases: KeyIndex) -> AccountsTable:
    def z(name: str, n: int = rows) -> Any:
        return np.zeros(n, dtype=_DTYPES[name])

    ints = np.zeros((rows, len(INT_FIELDS)), dtype=np.int64)
    return AccountsTable(
        ints=ints, balance=ints[:, 0], credit_limit=ints[:, 1], reserved=ints[:, 2],
        created=ints[:, 3], updated=ints[:, 4], seq=ints[:, 5], bundle_seq=ints[:, 6],
        nbundles=ints[:, 7], ledger_tail=ints[:, 8], currency=z("currency"),
        plan=z("plan"), status=z("status"), id_off=z("id_off"), id_len=z("id_len"),
        alias_first=z("alias_first"), alias_count=z("alias_count"), dirty=z("dirty"),
        dirty_rows=z("dirty_rows"), id_arena=np.zeros(id_bytes, dtype=np.uint8),
        alias_off=z("alias_off", entries), alias_len=z("alias_len", entries),
        alias_arena=np.zeros(alias_bytes, dtype=np.uint8), meta=np.zeros(META_SIZE, dtype=np.int64),
        ids=ids, aliases=aliases, currencies=Codes.of((), np.uint16), plans=Codes.of((), np.int32),
        statuses=Codes.of(STATUSES, np.uint8))


def _slots_for(keys: int) -> int:
    """The smallest slot count (a power of two) holding `keys` under the index's 3/4 load."""
    cap = 16
    while cap * 3 < max(keys, 1) * 4:
        cap *= 2
    return cap


# -- growth -------------------------------------------------------------------------------------

def _doubled(a: npt.NDArray[Any], need: int, used: int) -> npt.NDArray[Any]:
    """a, or a copy of its first `used` items in an array doubled until `need` fit."""
    size = max(a.size, 1)
    if need <= a.size:
        return a
    while size < need:
        size *= 2
    out = np.zeros(size, dtype=a.dtype)
    out[:used] = a[:used]
    return out


def reserve_rows(t: AccountsTable, rows: int) -> None:
    """Room for `rows` more rows (every per-row column doubles together)."""
    used = t.rows
    if used + rows <= t.capacity:
        return
    for name in ROW_COLUMNS:
        setattr(t, name, _doubled(getattr(t, name), used + rows, used))
    size = t.capacity
    while size < used + rows:
        size *= 2
    ints = np.zeros((size, len(INT_FIELDS)), dtype=np.int64)
    ints[:used] = t.ints[:used]
    t.ints = ints
    for k, name in enumerate(INT_FIELDS):
        setattr(t, name, ints[:, k])


def _reserve_entries(t: AccountsTable, entries: int, alias_bytes: int) -> None:
    if t.meta[M_DEAD] * 2 > t.meta[M_ENTRIES] and t.meta[M_ENTRIES] + entries > t.alias_off.size:
        compact_aliases(t)
    used = int(t.meta[M_ENTRIES])
    for name in ENTRY_COLUMNS:
        setattr(t, name, _doubled(getattr(t, name), used + entries, used))
    at = int(t.meta[M_ALIAS_USED])
    t.alias_arena = _doubled(t.alias_arena, at + alias_bytes, at)


@njit(cache=True)
def _gather(src: Bytes, offs: Int64s, lens: Int64s, dst: Bytes, new_offs: Int64s) -> Int:
    """Copy the spans src[offs[i]:][:lens[i]] one after another into dst; their new offsets."""
    at = 0
    for i in range(offs.size):
        new_offs[i] = at
        o, n = offs[i], lens[i]
        for j in range(n):
            dst[at + j] = src[o + j]
        at += n
    return at


def compact_aliases(t: AccountsTable) -> None:
    """Drop the dead alias entries and their bytes (rows' entries laid out again in row order).
    From Python, between batches; put_record calls it when dead entries pass half of them."""
    rows = t.rows
    counts = t.alias_count[:rows]
    total = int(counts.sum())
    starts = np.zeros(rows, dtype=np.int64)
    if rows > 1:
        np.cumsum(counts[:-1], out=starts[1:])
    live = np.repeat(t.alias_first[:rows] - starts, counts) + np.arange(total, dtype=np.int64)
    lens = t.alias_len[live]
    nbytes = int(lens.sum())
    arena = np.zeros(max(nbytes * 2, 64), dtype=np.uint8)
    offs = np.zeros(max(total * 2, 16), dtype=np.int64)
    new_lens = np.zeros(offs.size, dtype=np.int64)
    new_lens[:total] = lens
    _gather(t.alias_arena, t.alias_off[live], lens, arena, offs[:total])
    t.alias_arena, t.alias_off, t.alias_len = arena, offs, new_lens
    t.alias_first[:rows] = starts
    t.meta[M_ENTRIES], t.meta[M_ALIAS_USED], t.meta[M_DEAD] = total, nbytes, 0


# -- the dirty marks ----------------------------------------------------------------------------

@njit(cache=True, inline="always")
def mark_dirty(dirty: U8s, dirty_rows: Int64s, meta: Int64s, row: Int) -> None:
    """Mark a row changed since the last checkpoint (for a kernel; list it once)."""
    if dirty[row] == 0:
        dirty[row] = 1
        n = meta[M_DIRTY]
        dirty_rows[n] = row
        meta[M_DIRTY] = n + 1


def touch(t: AccountsTable, row: int) -> None:
    """mark_dirty from Python, after changing a row's columns directly."""
    if not 0 <= row < t.rows:
        raise IndexError(f"row {row} not in 0..{t.rows - 1}")
    if not t.dirty[row]:
        t.dirty[row] = 1
        n = int(t.meta[M_DIRTY])
        t.dirty_rows[n] = row
        t.meta[M_DIRTY] = n + 1


# -- records ------------------------------------------------------------------------------------

def record(t: AccountsTable, row: int) -> Account:
    """The row as the Account the store holds (or will hold after the next checkpoint)."""
    if not 0 <= row < t.meta.item(M_ROWS):
        raise IndexError(f"row {row} not in 0..{t.rows - 1}")
    balance, credit_limit, reserved, *rest = t.ints[row].tolist()
    off = t.id_off.item(row)
    return Account(
        str(t.id_arena.data[off:off + t.id_len.item(row)], "utf-8"),
        t.currencies.names[t.currency.item(row)], balance, credit_limit, reserved,
        t.plans.names[t.plan.item(row)], t.statuses.names[t.status.item(row)],
        [a.decode() for a in t.alias_bytes(row)], *rest)


def records(t: AccountsTable, rows: Sequence[int] | Int64s) -> list[Account]:
    """record() of many rows, in bulk (see _stored)."""
    keys, stored = _stored(t, np.asarray(rows, dtype=np.int64))
    return [Account(k.decode(), *f) for k, f in zip(keys, stored, strict=True)]


def _stored(t: AccountsTable, idx: Int64s) -> tuple[list[bytes], Iterator[tuple[Any, ...]]]:
    """The rows' keys and their stored fields (a tuple each in Account's field order: what
    Account.unpack takes after the id, and what Account.pack packs; msgpack packs a tuple as the
    array a list makes). Each column is read once for all the rows (fancy index + tolist) and
    the tuples are zipped in C: a numpy scalar per cell would cost more than the LMDB put."""
    cols: dict[str, list[Any]] = dict(zip(INT_FIELDS, t.ints[idx].T.tolist(), strict=True))
    for name, codes in zip(CODE_FIELDS, (t.currencies, t.plans, t.statuses), strict=True):
        cols[name] = list(map(codes.names.__getitem__, getattr(t, name)[idx].tolist()))
    mv = t.id_arena.data
    keys = [bytes(mv[o:o + n]) for o, n in zip(t.id_off[idx].tolist(), t.id_len[idx].tolist(),
                                               strict=True)]
    counts = t.alias_count[idx]
    total = int(counts.sum())
    starts = np.zeros(idx.size + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    entries = np.repeat(t.alias_first[idx] - starts[:-1], counts) + np.arange(total)
    flat = _decode(t.alias_arena, t.alias_off[entries].tolist(), t.alias_len[entries].tolist())
    cols["aliases"] = [flat[a:b] for a, b in pairwise(starts.tolist())]
    return keys, zip(*(cols[name] for name in _STORED), strict=True)


def _decode(arena: Bytes, offs: list[int], lens: list[int]) -> list[str]:
    mv = arena.data  # a memoryview: slicing it makes no numpy object
    return [str(mv[o:o + n], "utf-8") for o, n in zip(offs, lens, strict=True)]


def _key(ident: object, what: str) -> bytes:
    if not isinstance(ident, str):
        raise InvalidArgument(f"bad {what} {ident!r}")
    key = text_key(ident)
    if len(key) > MAX_KEY:
        raise InvalidArgument(f"{what} {ident!r} is longer than {MAX_KEY} bytes")
    return key


def put_record(t: AccountsTable, acct: Account) -> int:
    """Insert or update the account's row from a record; returns the row, marked dirty. Aliases
    added or removed update the alias index and alias_changes. Checks everything first, so a
    refused record (bad id or alias, an alias of another account, an integer outside int64)
    changes nothing."""
    key = _key(acct.id, "account id")
    new = [_key(a, "alias") for a in acct.aliases]
    if len(set(new)) != len(new):
        raise InvalidArgument(f"repeated alias in {acct.aliases!r}")
    values = [getattr(acct, name) for name in INT_FIELDS]
    for name, v in zip(INT_FIELDS, values, strict=True):
        if isinstance(v, bool) or not isinstance(v, int) or not _INT64[0] <= v <= _INT64[1]:
            raise InvalidArgument(f"{name} {v!r} is not an int64")
    for name in CODE_FIELDS:
        if not isinstance(getattr(acct, name), str):
            raise InvalidArgument(f"bad {name} {getattr(acct, name)!r}")
    found = t.ids.get(key)
    row = t.rows if found is None else found
    old = [] if found is None else t.alias_bytes(row)
    if old != new:
        for a in new:
            owner = t.aliases.get(a)
            if owner is not None and owner != row:
                raise DuplicateAccount(a.decode())
    codes = (t.currencies.get(acct.currency), t.plans.get(acct.plan), t.statuses.get(acct.status))
    if found is None:
        reserve_rows(t, 1)
        at = int(t.meta[M_ID_USED])
        t.id_arena = _doubled(t.id_arena, at + len(key), at)
        t.id_arena[at:at + len(key)] = np.frombuffer(key, dtype=np.uint8)
        t.id_off[row], t.id_len[row] = at, len(key)
        t.meta[M_ID_USED] = at + len(key)
        t.alias_first[row] = t.alias_count[row] = 0
        t.meta[M_ROWS] = row + 1
        t.ids.put(key, row)
    t.ints[row] = values
    t.currency[row], t.plan[row], t.status[row] = codes
    if old != new:
        _set_aliases(t, row, old, new)
    touch(t, row)
    return row


def _set_aliases(t: AccountsTable, row: int, old: list[bytes], new: list[bytes]) -> None:
    for a in set(old) - set(new):
        t.aliases.delete(a)
        t.alias_changes[a] = -1
    for a in new:
        if a not in old:
            t.aliases.put(a, row)
            t.alias_changes[a] = row
    _reserve_entries(t, len(new), sum(map(len, new)))
    t.meta[M_DEAD] += int(t.alias_count[row])
    first = int(t.meta[M_ENTRIES])
    at = int(t.meta[M_ALIAS_USED])
    for e, a in enumerate(new, first):
        t.alias_arena[at:at + len(a)] = np.frombuffer(a, dtype=np.uint8)
        t.alias_off[e], t.alias_len[e] = at, len(a)
        at += len(a)
    t.alias_first[row], t.alias_count[row] = first, len(new)
    t.meta[M_ENTRIES], t.meta[M_ALIAS_USED] = first + len(new), at


# -- load ---------------------------------------------------------------------------------------

class AliasMismatch(Exception):
    """The ALIASES db and the accounts' alias lists disagree. balance.ops writes both in one txn,
    so this store was changed behind them (or damaged): which side is right is unknown, and a
    guess would become durable at the next checkpoint, so load refuses and names the keys."""


def _layout(keys: Sequence[bytes]) -> tuple[Bytes, Int64s, Int64s]:
    """keys in one buffer: (buf, offsets, lengths)."""
    lens = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    offs = np.zeros(len(keys), dtype=np.int64)
    if len(keys) > 1:
        np.cumsum(lens[:-1], out=offs[1:])
    return np.frombuffer(b"".join(keys), dtype=np.uint8), offs, lens


def _indexed(keys: Sequence[bytes], buf: Bytes, offs: Int64s, lens: Int64s,
             values: Int64s) -> KeyIndex:
    ix = KeyIndex.empty(_slots_for(len(keys)), max(64, int(lens.sum()) * 5 // 4))
    ix.put_batch(buf, offs, np.zeros(len(keys), dtype=np.int64), lens, values)
    return ix


def load(view: View) -> AccountsTable:
    """Every record of the ACCOUNTS db as a table, after checking the ALIASES db agrees with the
    records' alias lists (AliasMismatch if not). In bulk: the keys and the values read by two
    cursor passes, the values unpacked by one msgpack call (their concatenation behind an array
    header is one msgpack array), the columns filled from the unpacked lists a column at a time.

    The cyclic GC is off meanwhile: unpacking makes two lists per account, and a collection every
    700 new containers over ever larger young generations took 3/4 of the time (measured at
    100,000 accounts: unpack 0.23 s with it, 0.06 s without). Nothing here makes a cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(view)
    finally:
        if was_enabled:
            gc.enable()


def _load(view: View) -> AccountsTable:
    txn, dbs = view.read_txn, view.dbs
    keys = list(txn.cursor(db=dbs[ACCOUNTS]).iternext(values=False))
    raws = list(txn.cursor(db=dbs[ACCOUNTS]).iternext(keys=False))
    n = len(keys)
    if len(raws) != n:
        raise RuntimeError("the ACCOUNTS db changed between two cursor passes of one read txn")
    recs: list[list[Any]] = msgpack.unpackb(b"\xdd" + struct.pack(">I", n) + b"".join(raws))
    del raws
    if any(len(r) != len(_STORED) for r in recs):
        recs = [_padded(k, r) for k, r in zip(keys, recs, strict=True)]
    cols: dict[str, Any] = dict(zip(_STORED, zip(*recs, strict=True), strict=True)) if n else \
        dict.fromkeys(_STORED, ())
    del recs

    cap = max(16, n + n // 4)
    aliases = cols["aliases"]
    counts = np.fromiter(map(len, aliases), dtype=np.int64, count=n)
    flat = list(map(str.encode, chain.from_iterable(aliases)))
    total = len(flat)
    id_buf, id_off, id_len = _layout(keys)
    al_buf, al_off, al_len = _layout(flat)
    rows = np.arange(n, dtype=np.int64)
    t = _allocate(cap, max(16, total + total // 4), 0, 0,
                  _indexed(keys, id_buf, id_off, id_len, rows),
                  _indexed(flat, al_buf, al_off, al_len, np.repeat(rows, counts)))
    for k, name in enumerate(INT_FIELDS):
        try:
            t.ints[:n, k] = np.fromiter(cols[name], dtype=np.int64, count=n)
        except (OverflowError, TypeError) as exc:
            raise InvalidArgument(f"an account's {name} is not an int64: {exc}") from None
    for name, codes in zip(CODE_FIELDS, (t.currencies, t.plans, t.statuses), strict=True):
        for s in dict.fromkeys(cols[name]):
            codes.get(s)
        getattr(t, name)[:n] = np.fromiter(map(codes.code.__getitem__, cols[name]),
                                           dtype=_DTYPES[name], count=n)
    t.id_arena, t.alias_arena = _with_room(id_buf), _with_room(al_buf)
    t.id_off[:n], t.id_len[:n] = id_off, id_len
    t.alias_off[:total], t.alias_len[:total] = al_off, al_len
    t.alias_count[:n] = counts
    if n > 1:
        np.cumsum(counts[:-1], out=t.alias_first[1:n])
    t.meta[M_ROWS], t.meta[M_ID_USED] = n, id_buf.size
    t.meta[M_ENTRIES], t.meta[M_ALIAS_USED] = total, al_buf.size
    _check_aliases(t, txn, dbs[ALIASES], keys, flat)
    return t


def _with_room(buf: Bytes) -> Bytes:
    """buf in an arena a quarter larger, so the first new keys need no doubling."""
    out = np.zeros(buf.size + buf.size // 4 + 64, dtype=np.uint8)
    out[:buf.size] = buf
    return out


def _padded(key: bytes, rec: list[Any]) -> list[Any]:
    """A record of an older layout (fewer fields) with Account's defaults, as Account.unpack
    reads it; more fields than Account has is a newer layout this code cannot write back."""
    if len(rec) > len(_STORED):
        raise InvalidArgument(f"account {key!r} has {len(rec)} fields, this version knows "
                              f"{len(_STORED)}")
    tail: list[object] = [[] if d is None and name == "aliases" else d
            for name, d in zip(_STORED[len(rec):], _DEFAULTS[len(rec):], strict=True)]
    return [*rec, *tail]


def _check_aliases(t: AccountsTable, txn: lmdb.Transaction[bytes], db: lmdb._Database,
                   ids: Sequence[bytes], flat: list[bytes]) -> None:
    """The ALIASES db holds exactly the records' aliases, each pointing at its account: the
    records' aliases are distinct (the index kept each once), the db has as many, and each of
    its entries is one of them with the same account."""
    entries = txn.stat(db)["entries"]
    if len(t.aliases) == len(flat) == entries:
        pairs = list(txn.cursor(db=db).iternext())
        if not pairs:
            return
        akeys, targets = zip(*pairs, strict=True)
        buf, offs, lens = _layout(akeys)
        found = t.aliases.lookup_batch(buf, offs, np.zeros(len(akeys), dtype=np.int64), lens)
        if (found >= 0).all() and list(map(ids.__getitem__, found.tolist())) == list(targets):
            return
    raise AliasMismatch(_alias_mismatch(t, txn, db, ids))


def _alias_mismatch(t: AccountsTable, txn: lmdb.Transaction[bytes], db: lmdb._Database,
                    ids: Sequence[bytes]) -> str:
    """What disagrees, for the message (the slow path: dicts are fine here)."""
    claimed: dict[bytes, list[bytes]] = {}
    for row in range(t.rows):
        for a in t.alias_bytes(row):
            claimed.setdefault(a, []).append(ids[row])
    stored = dict(txn.cursor(db=db).iternext())
    lines = [f"alias {a!r} is listed by {len(o)} accounts {o[:3]!r}"
             for a, o in claimed.items() if len(o) > 1]
    lines += [f"alias {a!r} of account {o[0]!r} is not in the {ALIASES} db"
              for a, o in claimed.items() if a not in stored]
    lines += [f"{ALIASES} db: {a!r} -> {v!r}, which lists "
              + ("no such alias" if a not in claimed else f"it on {claimed[a][0]!r}")
              for a, v in stored.items() if claimed.get(a, [None])[0] != v]
    return f"{len(lines)} disagreements of the {ALIASES} db and the accounts: " + "; ".join(lines[:10])


# -- checkpoint ---------------------------------------------------------------------------------

class WriteTx(Protocol):
    """What checkpoint writes through (balance.store.Tx has it)."""

    @property
    def write_txn(self) -> lmdb.Transaction[bytes]: ...

    @property
    def dbs(self) -> dict[str, Any]: ...


def checkpoint(t: AccountsTable, txn_factory: Callable[[Callable[[WriteTx], None]], object],
               chunk: int = CHUNK) -> int:
    """Write the dirty rows into the ACCOUNTS db and the alias changes into ALIASES; returns the
    rows written. `txn_factory(fn)` runs fn in one write txn and commits it (Store.execute: it
    grows the map and reruns fn when full, and fn only puts, so a rerun is harmless).

    `chunk` rows per txn: a txn holds the environment's one write lock, so a long checkpoint in
    one txn would stall every other writer. A chunk's marks are cleared once its txn is
    committed, so a failure leaves the rows not yet written dirty for the next checkpoint. The
    alias changes go with the last chunk: records are written first, and accounts are never
    deleted, so an alias the ALIASES db holds always names an account the ACCOUNTS db has.

    The rows go in row order, which is key order for every row load made (it reads the db in key
    order; rows put_record adds since come after): each chunk is then a key range and rewrites
    its own leaf pages once, where chunks of rows taken at random each rewrote most of the same
    pages (measured, 10,000 random rows of 100,000 in 3 chunks: 6.2 µs a row in the order they
    were dirtied, 3.4 in row order; the same puts in one txn 2.8-3.1)."""
    if chunk < 1:
        raise ValueError(f"chunk is >= 1, not {chunk}")
    rows = np.sort(t.dirty_list())
    starts = list(range(0, rows.size, chunk)) or ([0] if t.alias_changes else [])
    done = 0
    try:
        for i, start in enumerate(starts):
            part = rows[start:start + chunk]
            keys, stored = _stored(t, part)
            items = list(zip(keys, map(pack, stored), strict=True))
            aliases = dict(t.alias_changes) if i == len(starts) - 1 else {}
            alias_items = [(a, t.id_bytes(r)) for a, r in aliases.items() if r >= 0]
            gone = [a for a, r in aliases.items() if r < 0]

            def write(tx: WriteTx, items: list[tuple[bytes, bytes]] = items,
                      alias_items: list[tuple[bytes, bytes]] = alias_items,
                      gone: list[bytes] = gone) -> None:
                txn = tx.write_txn
                accounts, alias_db = tx.dbs[ACCOUNTS], tx.dbs[ALIASES]
                for k, v in items:
                    txn.put(k, v, db=accounts)
                for a in gone:
                    txn.delete(a, db=alias_db)
                for a, k in alias_items:
                    txn.put(a, k, db=alias_db)

            txn_factory(write)
            t.dirty[part] = 0
            done += part.size
            for a in aliases:
                if t.alias_changes.get(a) == aliases[a]:
                    del t.alias_changes[a]
    finally:
        left = rows[done:]
        t.dirty_rows[:left.size] = left
        t.meta[M_DIRTY] = left.size
    return done
