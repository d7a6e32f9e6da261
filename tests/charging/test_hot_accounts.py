"""The accounts table (ocs.charging.hot.accounts) against the balance store, the model.

Records put into the table come back equal (aliases, statuses, plans, currencies, int64 extremes);
a table loaded from a store built by balance.ops equals the store's records and alias index; a
checkpoint writes exactly Account.pack bytes of the dirty rows only (counted), with the alias
changes, and a fresh load equals the table; growth past the initial capacity keeps every record.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from balance import ops
from balance.errors import DuplicateAccount, InvalidArgument
from balance.records import STATUSES, Account
from balance.schema import ACCOUNTS, ALIASES
from balance.store import open_store
from ocs.charging.hot import accounts as H

INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
               min_size=1, max_size=12)
NAME = st.one_of(st.sampled_from(["EUR", "USD", "default", "gold", *STATUSES]), st.text(max_size=6))


@st.composite
def account_sets(draw: Any, max_accounts: int = 12) -> list[Account]:
    """Accounts with distinct ids and aliases distinct across all of them (and from the ids)."""
    idents = draw(st.lists(TEXT, min_size=0, max_size=max_accounts * 3, unique=True))
    n = draw(st.integers(0, min(max_accounts, len(idents))))
    ids, free = idents[:n], idents[n:]
    out = []
    for account_id in ids:
        k = draw(st.integers(0, min(3, len(free))))
        aliases, free = free[:k], free[k:]
        out.append(Account(account_id, draw(NAME), draw(INT64), draw(INT64), draw(INT64),
                           draw(NAME), draw(NAME), aliases, *(draw(INT64) for _ in range(6))))
    return out


def table_records(t: H.AccountsTable) -> dict[str, Account]:
    return {a.id: a for a in (H.record(t, row) for row in range(t.rows))}


def table_aliases(t: H.AccountsTable) -> dict[bytes, bytes]:
    return {a: t.id_bytes(row) for a, row in t.aliases.items()}


def stored(store: Any) -> tuple[dict[str, Account], dict[bytes, bytes], dict[bytes, bytes]]:
    """The store's accounts, its ALIASES db and the raw ACCOUNTS values."""
    with store.read() as v:
        accts = {a.id: a for a in v.accounts()}
        aliases = dict(v.txn.cursor(db=v.dbs[ALIASES]).iternext())
        raw = dict(v.txn.cursor(db=v.dbs[ACCOUNTS]).iternext())
    return accts, aliases, raw


def loaded(store: Any) -> H.AccountsTable:
    with store.read() as v:
        return H.load(v)


def assert_table_is_store(t: H.AccountsTable, store: Any) -> None:
    accts, aliases, raw = stored(store)
    assert table_records(t) == accts
    assert table_aliases(t) == aliases
    assert {a.id.encode(): a.pack() for a in table_records(t).values()} == raw
    assert dict(t.ids.items()) == {a.id.encode(): t.row_of(a.id) for a in accts.values()}


def write_raw(store: Any, accts: list[Account]) -> None:
    """Records straight into the dbs, as ops would leave them (the table must not care how)."""
    def fn(tx: Any) -> None:
        t = tx.write_txn
        for name in (ACCOUNTS, ALIASES):
            t.drop(tx.dbs[name], delete=False)
        for a in accts:
            t.put(a.id.encode(), a.pack(), db=tx.dbs[ACCOUNTS])
            for alias in a.aliases:
                t.put(alias.encode(), a.id.encode(), db=tx.dbs[ALIASES])
    store.execute(fn)


class Counting:
    """A txn factory over store.execute that counts txns and each db's puts and deletes."""

    def __init__(self, store: Any, fail_at: int = 0) -> None:
        self.store, self.fail_at = store, fail_at
        self.names = {id(h): n for n, h in store.dbs.items()}
        self.counts: Counter[str] = Counter()

    def __call__(self, fn: Any) -> None:
        self.counts["txns"] += 1
        if self.counts["txns"] == self.fail_at:
            raise OSError("disk gone")
        self.store.execute(lambda tx: fn(_CountingTx(tx, self)))


class _CountingTx:
    def __init__(self, tx: Any, c: Counting) -> None:
        self.dbs, self.write_txn = tx.dbs, _CountingTxn(tx.write_txn, c)


class _CountingTxn:
    def __init__(self, txn: Any, c: Counting) -> None:
        self.txn, self.c = txn, c

    def put(self, key: bytes, value: bytes, db: Any) -> bool:
        self.c.counts["put " + self.c.names[id(db)]] += 1
        return bool(self.txn.put(key, value, db=db))

    def delete(self, key: bytes, db: Any) -> bool:
        self.c.counts["delete " + self.c.names[id(db)]] += 1
        return bool(self.txn.delete(key, db=db))


@pytest.fixture
def store(tmp_path: Any) -> Any:
    s = open_store(tmp_path / "data", sync=False)
    yield s
    s.close()


# -- round trips --------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(account_sets(), st.integers(1, 8))
def test_records_round_trip_through_the_table(accts: list[Account], capacity: int) -> None:
    t = H.empty(capacity)
    for a in accts:
        H.put_record(t, a)
    assert t.rows == len(accts)
    assert [H.record(t, row) for row in range(t.rows)] == accts
    assert H.records(t, np.arange(t.rows)) == accts
    for a in accts:
        assert t.row_of(a.id) == accts.index(a)
        for alias in a.aliases:
            assert t.row_of(alias) == accts.index(a)
    assert table_aliases(t) == {al.encode(): a.id.encode() for a in accts for al in a.aliases}
    assert sorted(t.dirty_list().tolist()) == list(range(len(accts)))
    again = H.empty()
    for a in reversed(accts):  # a second put of the same records changes nothing but the order
        H.put_record(again, a)
        H.put_record(again, a)
    assert sorted(table_records(again).values(), key=accts.index) == accts


_STORE_DIR = tempfile.TemporaryDirectory()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(account_sets(max_accounts=20))
def test_a_store_loads_as_its_records(accts: list[Account]) -> None:
    with open_store(_STORE_DIR.name, sync=False) as s:  # one store, emptied for each example
        write_raw(s, accts)
        t = loaded(s)
        assert_table_is_store(t, s)
        assert t.dirty_list().tolist() == [] and t.alias_changes == {}


def test_older_records_load_with_accounts_defaults(store: Any) -> None:
    """A record of an earlier layout (no ledger_tail, no nbundles) reads as Account.unpack reads it."""
    import msgpack
    short = msgpack.packb(["EUR", 5, 0, 0, "default", "active", ["x1"], 1, 2, 3, 4])
    store.execute(lambda tx: (tx.put(ACCOUNTS, b"a1", short), tx.put(ALIASES, b"x1", b"a1")))
    t = loaded(store)
    with store.read() as v:
        assert H.record(t, 0) == v.get_account("a1") == Account(
            "a1", "EUR", 5, 0, 0, "default", "active", ["x1"], 1, 2, 3, 4, 0, 0)


def _provision_with_ops(store: Any) -> None:
    for i in range(40):
        store.execute(lambda tx, i=i: ops.create_account(
            tx, f"c{i}", account_id=f"49170{i:05d}", currency=("EUR", "USD", "GBP")[i % 3],
            balance=(i - 20) * 1_000_000, credit_limit=i * 7, plan=("default", "gold")[i % 2],
            aliases=[f"26201{i:010d}", f"sip:{i}@example.org"][: i % 3]))
    for i in range(0, 40, 3):
        store.execute(lambda tx, i=i: ops.topup(tx, f"t{i}", f"49170{i:05d}", 10**12 + i))
    store.execute(lambda tx: ops.set_status(tx, "s1", "4917000001", "suspended"))
    store.execute(lambda tx: ops.set_status(tx, "s2", "4917000002", "closed"))
    store.execute(lambda tx: ops.update_account(tx, "u1", "4917000004", aliases=["new-4", "newer-4"],
                                                plan="platinum"))
    store.execute(lambda tx: ops.update_account(tx, "u2", "4917000005", aliases=[]))
    # an alias moves: 7 gives its aliases up, 8 takes one of them
    store.execute(lambda tx: ops.update_account(tx, "u3", "4917000007", aliases=["only-7"]))
    store.execute(lambda tx: ops.update_account(tx, "u4", "4917000008",
                                                aliases=["262010000000007", "8b"]))
    store.execute(lambda tx: ops.update_account(tx, "u5", "4917000020", currency="JPY"))


def test_a_store_built_by_the_ops_loads_as_its_records(store: Any) -> None:
    _provision_with_ops(store)
    t = loaded(store)
    assert t.rows == 40
    assert_table_is_store(t, store)
    assert t.statuses.names[:3] == list(STATUSES)
    assert t.status[t.row_of("4917000002")] == STATUSES.index("closed")
    assert t.row_of("262010000000007") == t.row_of("4917000008")
    assert t.row_of("sip:7@example.org") is None and t.row_of("nobody") is None


@pytest.mark.parametrize("damage", ["stray", "missing", "repointed", "twice"])
def test_load_refuses_an_alias_index_that_disagrees(store: Any, damage: str) -> None:
    store.execute(lambda tx: ops.create_account(tx, None, account_id="a", currency="EUR",
                                                aliases=["a1", "a2"]))
    store.execute(lambda tx: ops.create_account(tx, None, account_id="b", currency="EUR",
                                                aliases=["b1"]))
    loaded(store)  # agrees

    def fn(tx: Any) -> None:
        if damage == "stray":
            tx.put(ALIASES, b"zz", b"a")
        elif damage == "missing":
            tx.delete(ALIASES, b"a2")
        elif damage == "repointed":
            tx.put(ALIASES, b"b1", b"a")
        else:  # two accounts list one alias, the index names one of them
            tx.put(ACCOUNTS, b"b", Account("b", "EUR", 0, aliases=["b1", "a1"]).pack())
            tx.delete(ALIASES, b"b1")
    store.execute(fn)
    with pytest.raises(H.AliasMismatch, match="disagreement"):
        loaded(store)


# -- changes and checkpoints --------------------------------------------------------------------

def test_checkpoint_writes_pack_bytes_and_a_fresh_load_equals_the_table(store: Any) -> None:
    _provision_with_ops(store)
    t = loaded(store)
    rows = [t.row_of(f"49170{i:05d}") for i in (3, 9, 10, 33)]
    for k, row in enumerate(rows):  # what a kernel does: columns, then the mark
        assert row is not None
        t.balance[row] -= 123_456 * (k + 1)
        t.reserved[row] += 1_000
        t.seq[row] += 1
        H.touch(t, row)
    t.balance[rows[0]] = -(2**63)
    t.reserved[rows[1]] = 2**63 - 1
    a = H.record(t, t.row_of("4917000011") or 0)  # the general path: aliases swapped, plan
    a.aliases, a.plan = ["x-11"], "brand-new-plan"
    H.put_record(t, a)
    b = H.record(t, t.row_of("4917000008") or 0)  # gives an alias up ...
    moved = b.aliases.pop(0)
    H.put_record(t, b)
    c = H.record(t, t.row_of("4917000013") or 0)  # ... that another takes
    c.aliases.append(moved)
    H.put_record(t, c)
    H.put_record(t, Account("new-one", "SEK", 42, aliases=["n1", "n2"], status="suspended"))
    assert t.alias_changes  # pending until the checkpoint
    counting = Counting(store)
    assert H.checkpoint(t, counting, chunk=3) == 8
    # 11's two aliases go, x-11 comes; the moved one is put once (to 13); n1, n2
    assert counting.counts == {"txns": 3, "put accounts": 8, "put aliases": 4, "delete aliases": 2}
    assert t.dirty_list().tolist() == [] and not t.dirty.any() and t.alias_changes == {}
    assert_table_is_store(t, store)
    fresh = loaded(store)
    assert table_records(fresh) == table_records(t)
    assert table_aliases(fresh) == table_aliases(t)
    counting = Counting(store)
    assert H.checkpoint(t, counting) == 0 and counting.counts == {}


def test_only_dirty_rows_are_written(store: Any) -> None:
    write_raw(store, [Account(f"a{i}", "EUR", i, aliases=[f"al{i}"]) for i in range(500)])
    t = loaded(store)
    touched = sorted({(i * 37) % 500 for i in range(60)})
    for row in touched + touched[:10]:  # twice: listed once
        t.balance[row] += 1
        H.touch(t, row)
    assert t.dirty_list().tolist() == touched and int(t.dirty.sum()) == len(touched)
    # what is stored for the clean rows is left alone: they carry a marker the checkpoint must keep
    marker = b"\x91\xa1M"
    clean = [r for r in range(500) if r not in touched]
    store.execute(lambda tx: [tx.put(ACCOUNTS, t.id_bytes(r), marker) for r in clean])
    counting = Counting(store)
    assert H.checkpoint(t, counting, chunk=16) == len(touched)
    assert counting.counts == {"txns": -(-len(touched) // 16), "put accounts": len(touched)}
    with store.read() as v:
        raw = dict(v.txn.cursor(db=v.dbs[ACCOUNTS]).iternext())
    assert all(raw[t.id_bytes(r)] == marker for r in clean)
    assert all(raw[t.id_bytes(r)] == H.record(t, r).pack() for r in touched)


def test_a_failed_chunk_leaves_its_rows_and_the_rest_dirty(store: Any) -> None:
    write_raw(store, [Account(f"a{i}", "EUR", i) for i in range(50)])
    t = loaded(store)
    for row in range(0, 50, 2):
        t.balance[row] = 10**15 + row
        H.touch(t, row)
    H.put_record(t, Account("a1", "EUR", 1, aliases=["late"]))  # alias change: the last chunk's
    with pytest.raises(OSError):
        H.checkpoint(t, Counting(store, fail_at=2), chunk=10)
    # written in row order: the first chunk (0, 1, 2, 4 .. 16) is in, the rest still dirty
    assert t.dirty_list().tolist() == [*range(18, 50, 2)] and t.alias_changes == {b"late": 1}
    accts = stored(store)[0]
    assert accts[t.id_bytes(16).decode()].balance == 10**15 + 16  # (rows are in key order:
    assert accts[t.id_bytes(18).decode()].balance < 10**15        # a0 a1 a10 a11 ...)
    counting = Counting(store)
    assert H.checkpoint(t, counting, chunk=10) == 16
    assert counting.counts == {"txns": 2, "put accounts": 16, "put aliases": 1}
    assert_table_is_store(t, store)


@njit(cache=False)
def _debit(balance: Any, dirty: Any, dirty_rows: Any, meta: Any, rows: Any, amount: int) -> None:
    for row in rows:
        balance[row] -= amount
        H.mark_dirty(dirty, dirty_rows, meta, row)


def test_a_kernel_marks_the_rows_it_changes(store: Any) -> None:
    write_raw(store, [Account(f"a{i}", "EUR", 1000) for i in range(10)])
    t = loaded(store)
    _debit(t.balance, t.dirty, t.dirty_rows, t.meta, np.array([3, 7, 3], dtype=np.int64), 5)
    assert t.dirty_list().tolist() == [3, 7] and t.balance[3] == 990
    assert H.checkpoint(t, store.execute) == 2
    assert stored(store)[0]["a3"].balance == 990
    assert_table_is_store(t, store)


def test_refused_records_change_nothing() -> None:
    t = H.empty()
    H.put_record(t, Account("a", "EUR", 1, aliases=["x"]))
    H.put_record(t, Account("b", "EUR", 2, aliases=["y"]))
    before = table_records(t), table_aliases(t), t.dirty_list().tolist()
    for bad in (Account("b", "EUR", 2, aliases=["y", "x"]),       # x is a's
                Account("c", "EUR", 2, aliases=["z", "x"]),
                Account("b", "EUR", 2**63),
                Account("b", "EUR", 2, aliases=["y", "y"]),
                Account("", "EUR", 2),
                Account("c", "EUR", 2, aliases=["bad\0alias"])):
        with pytest.raises((DuplicateAccount, InvalidArgument)):
            H.put_record(t, bad)
    assert (table_records(t), table_aliases(t), t.dirty_list().tolist()) == before
    assert t.rows == 2


def test_growth_past_the_initial_capacity() -> None:
    t = H.empty(2)
    accts = [Account(f"acct-{i}", "EUR", -i * 10**9, plan=f"p{i % 7}",
                     aliases=[f"imsi-{i}", f"msisdn-{i}"][: i % 3]) for i in range(3000)]
    for a in accts:
        H.put_record(t, a)
    assert t.capacity >= 3000 and t.capacity & (t.capacity - 1) == 0  # doubled from 2
    assert {len(getattr(t, name)) for name in H.ROW_COLUMNS} == {t.capacity}
    assert [H.record(t, r) for r in range(3000)] == accts
    assert t.plans.names == [f"p{i}" for i in range(7)]
    # alias churn on one account: 20,000 dead entries, compacted away instead of growing the
    # entry columns past a few times the live ones; records stay right
    live = sum(len(a.aliases) for a in accts)
    for k in range(10_000):
        accts[5].aliases = [f"churn-{k}", f"imsi-5-{k % 3}"]
        H.put_record(t, accts[5])
    assert t.meta[H.M_DEAD] < 10_000 and t.alias_off.size <= 4 * live
    assert t.alias_arena.size <= 4 * sum(len(al) for a in accts for al in a.aliases)
    assert [H.record(t, r) for r in range(3000)] == accts
    assert t.row_of("churn-9999") == 5 and t.row_of("churn-9998") is None
    assert t.alias_changes[b"churn-9998"] == -1 and t.alias_changes[b"churn-9999"] == 5
