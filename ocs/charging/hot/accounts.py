"""The accounts table of the engine's hot state: every account of the ACCOUNTS db as numpy columns.

A batch kernel reads and writes an account's balance and reserved money by row, found through the
`ids` or `aliases` KeyIndex, with no Python object per account (millions of them bring GC stalls,
engine-measurements.md). The general path (the CLI's changes, the rare request numba leaves to
Python) works on balance.records.Account: `record` builds one from a row and `put_record` writes
one back. LMDB stays the durable store: `load` reads the ACCOUNTS db at start, `checkpoint` writes
back the rows changed since the last one, a chunk of rows per write txn, each value exactly
Account.pack of the row's record (the on-disk format does not change).

Columns: int64 for the integers of the record; the three strings as codes into a lookup list each
(a code per distinct string, appended as new ones appear; statuses are seeded with
balance.records.STATUSES so a kernel may test `status == ACTIVE`); the ids and aliases as bytes in
arenas with offset/length columns. An account keeps its row for good (accounts are never deleted,
`closed` is a status). A row's aliases are entries [alias_first, alias_first + alias_count) of
the alias columns; changing them appends new entries and leaves the old ones dead until a
compaction. Every per-row array has the same capacity, doubled from Python when full, so a kernel
never allocates; it is handed the arrays afresh after a growth.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from itertools import chain
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgpack
import numpy as np
import numpy.typing as npt
from numba import njit

from balance.errors import DuplicateAccount, InvalidArgument
from balance.records import STATUSES, Account, text_key
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
    """The columns (per row unless said otherwise) and the two indexes. Rows 0..rows-1 are in use;
    the arrays are longer (the capacity). `dirty[row]` is 1 for a row changed since the last
    checkpoint and `dirty_rows[:meta[M_DIRTY]]` lists those rows once each, in the order they were
    first changed: a kernel marks a row with `mark_dirty` (the mark and the list are arrays so a
    kernel can keep them), and a checkpoint writes only those. `alias_changes` is alias -> row,
    or -1 for a removed alias, since the last checkpoint: what the ALIASES db still needs."""

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
        return int(self.balance.size)

    def __len__(self) -> int:
        return self.rows

    def nbytes(self) -> int:
        """The memory the table's arrays hold (both indexes included)."""
        arrays: list[npt.NDArray[Any]] = [getattr(self, n) for n in ROW_COLUMNS + ENTRY_COLUMNS]
        return (sum(a.nbytes for a in arrays) + self.id_arena.nbytes + self.alias_arena.nbytes
                + self.meta.nbytes + self.ids.nbytes() + self.aliases.nbytes())

    def row_of(self, ident: str) -> int | None:
        """The row of an account id or alias (the id first, as View.resolve), or None."""
        key = ident.encode()
        if not 1 <= len(key) <= MAX_KEY:
            return None
        row = self.ids.get(key)
        return self.aliases.get(key) if row is None else row

    def id_bytes(self, row: int) -> bytes:
        off = int(self.id_off[row])
        return self.id_arena[off:off + int(self.id_len[row])].tobytes()

    def alias_bytes(self, row: int) -> list[bytes]:
        first = int(self.alias_first[row])
        out = []
        for e in range(first, first + int(self.alias_count[row])):
            off = int(self.alias_off[e])
            out.append(self.alias_arena[off:off + int(self.alias_len[e])].tobytes())
        return out

    def dirty_list(self) -> Int64s:
        """The rows changed since the last checkpoint (a copy)."""
        return self.dirty_rows[:int(self.meta[M_DIRTY])].copy()


ROW_COLUMNS: Final = (*INT_FIELDS, *CODE_FIELDS, "id_off", "id_len", "alias_first", "alias_count",
                      "dirty", "dirty_rows")
ENTRY_COLUMNS: Final = ("alias_off", "alias_len")
_DTYPES: Final[dict[str, type[np.integer[Any]]]] = {
    **dict.fromkeys(INT_FIELDS, np.int64), "currency": np.uint16, "plan": np.int32,
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

    return AccountsTable(
        balance=z("balance"), credit_limit=z("credit_limit"), reserved=z("reserved"),
        created=z("created"), updated=z("updated"), seq=z("seq"), bundle_seq=z("bundle_seq"),
        nbundles=z("nbundles"), ledger_tail=z("ledger_tail"), currency=z("currency"),
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
    if not 0 <= row < t.rows:
        raise IndexError(f"row {row} not in 0..{t.rows - 1}")
    first, count = t.alias_first.item(row), t.alias_count.item(row)
    return Account(
        _decode(t.id_arena, [t.id_off.item(row)], [t.id_len.item(row)])[0],
        t.currencies.names[t.currency.item(row)], t.balance.item(row), t.credit_limit.item(row),
        t.reserved.item(row), t.plans.names[t.plan.item(row)],
        t.statuses.names[t.status.item(row)],
        _decode(t.alias_arena, t.alias_off[first:first + count].tolist(),
                t.alias_len[first:first + count].tolist()) if count else [],
        t.created.item(row), t.updated.item(row), t.seq.item(row), t.bundle_seq.item(row),
        t.nbundles.item(row), t.ledger_tail.item(row))


def records(t: AccountsTable, rows: Sequence[int] | Int64s) -> list[Account]:
    """record() of many rows (a checkpoint's chunk): each column read once for all of them
    (fancy index + tolist), not a numpy scalar per cell."""
    idx = np.asarray(rows, dtype=np.int64)
    ints = [getattr(t, name)[idx].tolist() for name in INT_FIELDS]
    cur, plan, status = (t.currencies.names, t.plans.names, t.statuses.names)
    ids = _decode(t.id_arena, t.id_off[idx].tolist(), t.id_len[idx].tolist())
    firsts, counts = t.alias_first[idx].tolist(), t.alias_count[idx].tolist()
    aoff, alen, aarena = t.alias_off, t.alias_len, t.alias_arena
    out = []
    for i, (c, p, s, first, count) in enumerate(zip(
            t.currency[idx].tolist(), t.plan[idx].tolist(), t.status[idx].tolist(), firsts, counts,
            strict=True)):
        aliases = (_decode(aarena, aoff[first:first + count].tolist(),
                           alen[first:first + count].tolist()) if count else [])
        out.append(Account(ids[i], cur[c], ints[0][i], ints[1][i], ints[2][i], plan[p], status[s],
                           aliases, ints[3][i], ints[4][i], ints[5][i], ints[6][i], ints[7][i],
                           ints[8][i]))
    return out


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
    for name, v in zip(INT_FIELDS, values, strict=True):
        getattr(t, name)[row] = v
    t.currency[row], t.plan[row], t.status[row] = codes
    old = t.alias_bytes(row)
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
    records' alias lists (AliasMismatch if not). In bulk: one cursor pass, the values unpacked by
    one msgpack call (their concatenation behind an array header is one msgpack array), columns
    filled from the unpacked lists a column at a time."""
    txn, dbs = view.read_txn, view.dbs
    pairs = list(txn.cursor(db=dbs[ACCOUNTS]).iternext())
    n = len(pairs)
    keys: Sequence[bytes] = ()
    raws: Sequence[bytes] = ()
    if n:
        keys, raws = zip(*pairs, strict=True)
    del pairs
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
    for name in INT_FIELDS:
        try:
            getattr(t, name)[:n] = np.fromiter(cols[name], dtype=np.int64, count=n)
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
    deleted, so an alias the ALIASES db holds always names an account the ACCOUNTS db has."""
    if chunk < 1:
        raise ValueError(f"chunk is >= 1, not {chunk}")
    rows = t.dirty_list()
    starts = list(range(0, rows.size, chunk)) or ([0] if t.alias_changes else [])
    done = 0
    try:
        for i, start in enumerate(starts):
            part = rows[start:start + chunk]
            items = [(a.id.encode(), a.pack()) for a in records(t, part)]
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
