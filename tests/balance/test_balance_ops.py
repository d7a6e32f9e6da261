"""Balance ops on a real LMDB store in tmp_path: accounts, bundles, two-phase charging, idempotency."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import pytest

from balance import ops
from balance.errors import (
    AccountBusy,
    AccountNotActive,
    CurrencyMismatch,
    DuplicateAccount,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    StoreFullError,
    UnknownAccount,
)
from balance.store import ALL_DBS, open_store
from balance.writer import GroupCommitWriter, WriterStopped

A = "491700000001"


def price(n: int) -> int:
    return n * 100


def afford(m: int) -> int:
    return m // 100


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "data", sync=False)
    s.execute(lambda tx: ops.create_account(tx, "mk", account_id=A, currency="EUR",
                                            balance=10_000, aliases=["262010000000001"]))
    yield s
    s.close()


def reserve(store, key, units, *, session="s1", rg=1, aon=True, unit="seconds", expires_at=10**10):
    return store.execute(lambda tx: ops.reserve(
        tx, key, account_id=A, session_id=session, rating_group=rg, unit=unit, units=units,
        price=price, afford=afford, all_or_nothing=aon, expires_at=expires_at))


def commit(store, key, used, *, session="s1", rg=1, release_rest=True):
    return store.execute(lambda tx: ops.commit(tx, key, account_id=A, session_id=session,
                                               rating_group=rg, used_units=used, price=price,
                                               release_rest=release_rest))


def account(store, account_id=A):
    with store.read() as v:
        return v.get_account(account_id)


def ledger_sums(store, account_id=A):
    with store.read() as v:
        entries = list(v.ledger(account_id))
    return sum(e.delta for e in entries), sum(e.reserved_delta for e in entries), entries


def test_open_store_creates_every_named_db_and_shares_the_env(tmp_path):
    s1 = open_store(tmp_path / "x", sync=False)
    s2 = open_store(tmp_path / "x", sync=False)
    assert s1.env is s2.env
    assert set(ALL_DBS) <= set(s1.dbs)
    s1.close()
    with s2.read() as v:  # still usable: the env is reference counted
        assert v.find_account("nobody") is None
    s2.close()


def test_create_resolve_and_duplicates(store):
    with store.read() as v:
        assert v.resolve("262010000000001") == A
        assert v.resolve(A) == A
        assert v.resolve("nope") is None
    with pytest.raises(DuplicateAccount):
        store.execute(lambda tx: ops.create_account(tx, "k2", account_id=A, currency="EUR"))
    with pytest.raises(DuplicateAccount):
        store.execute(lambda tx: ops.create_account(tx, "k3", account_id="4900",
                                                    currency="EUR", aliases=["262010000000001"]))
    with pytest.raises(InvalidArgument):
        store.execute(lambda tx: ops.create_account(tx, "k4", account_id="49\0x", currency="EUR"))
    with store.read() as v:
        assert v.find_account("4900") is None  # nothing half-created


def test_topup_adjust_currency_and_status(store):
    assert store.execute(lambda tx: ops.topup(tx, "t1", A, 500)) == 10_500
    assert store.execute(lambda tx: ops.adjust(tx, "a1", A, -20_000, "correction")) == -9_500
    with pytest.raises(CurrencyMismatch):
        store.execute(lambda tx: ops.topup(tx, "t2", A, 1, currency="USD"))
    with pytest.raises(InvalidArgument):
        store.execute(lambda tx: ops.topup(tx, "t3", A, -1))
    with pytest.raises(UnknownAccount):
        store.execute(lambda tx: ops.topup(tx, "t4", "nobody", 1))
    store.execute(lambda tx: ops.set_status(tx, "st1", A, "suspended"))
    with pytest.raises(AccountNotActive):
        reserve(store, "r1", 1)
    store.execute(lambda tx: ops.set_status(tx, "st2", A, "closed"))
    with pytest.raises(AccountNotActive):
        store.execute(lambda tx: ops.set_status(tx, "st3", A, "active"))
    bal, _, entries = ledger_sums(store)
    assert bal == account(store).balance == -9_500
    assert [e.kind for e in entries] == ["create", "topup", "adjust", "status", "status"]


def test_reserve_all_or_nothing_and_up_to_available(store):
    with pytest.raises(InsufficientFunds):
        reserve(store, "r1", 101)  # 10_100 > 10_000
    assert account(store).reserved == 0
    r = reserve(store, "r2", 150, aon=False)
    assert (r.units_granted, r.money_held, r.limited) == (100, 10_000, True)
    assert account(store).available == 0
    r = reserve(store, "r3", 5, session="s2", aon=False)  # nothing left: no reservation
    assert (r.units_granted, r.limited) == (0, True)
    with store.read() as v:
        assert v.get_reservation("s2", 1) is None
        assert [x.session_id for x in v.reservations(A)] == ["s1"]


def test_commit_releases_rest_and_reports_shortfall(store):
    reserve(store, "r1", 30)  # holds 3_000
    c = commit(store, "c1", 10)
    assert (c.money_units, c.money_debited, c.shortfall) == (10, 1_000, 0)
    a = account(store)
    assert (a.balance, a.reserved) == (9_000, 0)
    reserve(store, "r2", 10)
    c = commit(store, "c2", 200)  # 20_000 wanted, 9_000 there
    assert (c.money_debited, c.shortfall, c.balance) == (9_000, 11_000, 0)
    bal, res, _ = ledger_sums(store)
    assert (bal, res) == (0, 0)


def test_commit_without_reservation_is_a_direct_debit(store):
    c = commit(store, "c1", 7, session="none")
    assert (c.money_debited, c.balance) == (700, 9_300)
    with store.read() as v:
        assert v.get_reservation("none", 1) is None


def test_partial_commit_keeps_the_reservation(store):
    reserve(store, "r1", 30)
    commit(store, "c1", 10, release_rest=False)
    with store.read() as v:
        res = v.get_reservation("s1", 1)
    assert res.money_held == 2_000 and account(store).reserved == 2_000
    commit(store, "c2", 5)
    assert account(store).reserved == 0
    assert account(store).balance == 8_500


def test_postpaid_goes_down_to_credit_limit_only(tmp_path):
    s = open_store(tmp_path / "pp", sync=False)
    s.execute(lambda tx: ops.create_account(tx, None, account_id=A, currency="EUR", balance=0,
                                            credit_limit=5_000))
    r = reserve(s, "r", 80, aon=False)
    assert r.units_granted == 50
    c = commit(s, "c", 80)
    assert (c.money_debited, c.shortfall) == (5_000, 3_000)
    assert account(s).balance == -5_000
    s.close()


def test_reserve_replaces_an_existing_reservation(store):
    reserve(store, "r1", 60)
    reserve(store, "r2", 20)
    a = account(store)
    assert a.reserved == 2_000
    with store.read() as v:
        assert len(v.reservations(A)) == 1


def test_bundles_drawn_by_priority_then_expiry_then_money(store):
    b_late = store.execute(lambda tx: ops.add_bundle(tx, "b1", A, unit="seconds", amount=10,
                                                     expires=10**9 * 3))
    b_soon = store.execute(lambda tx: ops.add_bundle(tx, "b2", A, unit="seconds", amount=10,
                                                     expires=10**9 * 2))
    b_prio = store.execute(lambda tx: ops.add_bundle(tx, "b3", A, unit="seconds", amount=10,
                                                     priority=5))
    b_other_rg = store.execute(lambda tx: ops.add_bundle(tx, "b4", A, unit="seconds", amount=99,
                                                         rating_groups=[7], priority=9))
    store.execute(lambda tx: ops.add_bundle(tx, "b5", A, unit="octets", amount=99, priority=9))
    r = reserve(store, "r1", 25)
    assert (r.units_granted, r.bundle_units, r.money_held) == (25, 25, 0)
    with store.read() as v:
        held = {b.id: b.reserved for b in v.bundles(A)}
    assert held[b_prio] == 10 and held[b_soon] == 10 and held[b_late] == 5
    assert held[b_other_rg] == 0
    c = commit(store, "c1", 40)  # 25 held + 5 more of b_late, then 10 priced
    assert (c.bundle_units_used, c.money_units, c.money_debited) == (30, 10, 1_000)
    with store.read() as v:
        left = {b.id: (b.remaining, b.reserved) for b in v.bundles(A)}
    assert left[b_late] == (0, 0) and left[b_prio] == (0, 0) and left[b_other_rg] == (99, 0)
    _, _, entries = ledger_sums(store)
    per_bundle: dict[str, int] = {}
    for e in entries:
        for bid, rem, _res in e.bundles:
            per_bundle[bid] = per_bundle.get(bid, 0) + rem
    assert per_bundle[b_other_rg] == 99 and per_bundle[b_late] == 0


def test_money_bundle_pays_before_balance(store):
    store.execute(lambda tx: ops.add_bundle(tx, "m", A, unit="money", amount=1_500))
    r = reserve(store, "r1", 20)
    assert r.money_held == 2_000 and account(store).reserved == 500
    c = commit(store, "c1", 20)
    assert c.money_debited == 2_000 and account(store).balance == 9_500


def test_release_and_expire_reservations(store):
    reserve(store, "r1", 10, session="a", expires_at=100)
    reserve(store, "r2", 10, session="b", expires_at=200)
    rel = store.execute(lambda tx: ops.release(tx, "x1", account_id=A, session_id="b", rating_group=1))
    assert rel.money_released == 1_000
    reserve(store, "r3", 10, session="c", expires_at=300)
    gone = store.execute(lambda tx: ops.expire_reservations(tx, now=250))
    assert gone == [("a", 1, A)]
    assert account(store).reserved == 1_000
    assert store.execute(lambda tx: ops.expire_reservations(tx, now=250)) == []
    _, res, entries = ledger_sums(store)
    assert res == 1_000 and entries[-1].kind == "expiry"


def test_expire_bundles_keeps_the_held_part(store):
    t = int(time.time())
    store.execute(lambda tx: ops.add_bundle(tx, "b1", A, unit="seconds", amount=50, expires=t + 1000))
    store.execute(lambda tx: ops.add_bundle(tx, "b2", A, unit="seconds", amount=50, expires=t + 2000))
    store.execute(lambda tx: ops.reserve(tx, "r", account_id=A, session_id="s", rating_group=1,
                                         unit="seconds", units=20, price=price, afford=afford,
                                         all_or_nothing=True, expires_at=10**10))
    out = store.execute(lambda tx: ops.expire_bundles(tx, now=t + 1500))
    assert out == [(A, "1", 30)]
    with store.read() as v:
        assert [(b.remaining, b.reserved) for b in v.bundles(A)] == [(20, 20), (50, 0)]


def test_idempotent_replay_returns_first_outcome_and_changes_nothing(store):
    first = reserve(store, "r1", 10)
    again = reserve(store, "r1", 50)  # same key, other arguments: first outcome
    assert again == first and account(store).reserved == 1_000
    c1 = commit(store, "c1", 5)
    assert commit(store, "c1", 5) == c1
    assert store.execute(lambda tx: ops.topup(tx, "t", A, 7)) == store.execute(
        lambda tx: ops.topup(tx, "t", A, 7))
    assert account(store).balance == 10_000 - 500 + 7
    with pytest.raises(IdempotencyConflict):
        store.execute(lambda tx: ops.adjust(tx, "t", A, 7, "x"))
    _, _, entries = ledger_sums(store)
    assert [e.kind for e in entries] == ["create", "reserve", "commit", "topup"]


def test_purge_idempotency_drops_only_old_keys(store):
    store.execute(lambda tx: ops.topup(tx, "old", A, 1))
    now = account(store).updated
    assert store.execute(lambda tx: ops.purge_idempotency(tx, before=now - 10)) == 0
    assert store.execute(lambda tx: ops.purge_idempotency(tx, before=now + 10)) == 2  # mk + old
    assert store.execute(lambda tx: ops.topup(tx, "old", A, 1)) == 10_002  # key forgotten


def test_close_refused_with_open_reservation(store):
    reserve(store, "r1", 1)
    with pytest.raises(AccountBusy):
        store.execute(lambda tx: ops.set_status(tx, "c", A, "closed"))


def test_map_grows_instead_of_failing(tmp_path):
    s = open_store(tmp_path / "small", sync=False, map_size=64 << 10)

    def many(tx):
        for i in range(3000):
            ops.create_account(tx, f"k{i}", account_id=f"49{i:08d}", currency="EUR", balance=i)
    s.execute(many)
    assert s.map_size() > 64 << 10
    with s.read() as v:
        assert sum(1 for _ in v.accounts()) == 3000
    s.set_max_map_size(s.map_size())
    with pytest.raises(StoreFullError):
        s.execute(lambda tx: [ops.create_account(tx, None, account_id=f"50{i:08d}",
                                                 currency="EUR") for i in range(30000)])
    s.close()


def _grow_elsewhere(path: str) -> None:
    s = open_store(path, sync=False)
    s.execute(lambda tx: [ops.create_account(tx, None, account_id=f"77{i:08d}", currency="EUR")
                          for i in range(5000)])
    s.close()


def test_map_resized_by_another_process_is_adopted(tmp_path):
    path = str(tmp_path / "shared")
    s = open_store(path, sync=False, map_size=64 << 10)
    s.execute(lambda tx: ops.create_account(tx, None, account_id="1", currency="EUR"))
    proc = multiprocessing.get_context("spawn").Process(target=_grow_elsewhere, args=(path,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    with s.read() as v:
        assert sum(1 for _ in v.accounts()) == 5001
    s.execute(lambda tx: ops.topup(tx, None, "1", 5))
    s.close()


async def test_writer_isolates_a_failing_op(store):
    w = GroupCommitWriter(store)
    w.start()

    def half_then_fail(tx):
        ops.topup(tx, "half", A, 1_000)  # written, then the op fails: must be undone
        raise RuntimeError("boom")

    futs = [w.submit(lambda tx, i=i: ops.topup(tx, f"ok{i}", A, 1)) for i in range(50)]
    futs.append(w.submit(half_then_fail))
    futs.append(w.submit(lambda tx: ops.topup(tx, "clean-fail", "nobody", 1)))
    futs += [w.submit(lambda tx, i=i: ops.topup(tx, f"ok2-{i}", A, 1)) for i in range(50)]
    out = await asyncio.gather(*futs, return_exceptions=True)
    await w.stop()
    assert isinstance(out[50], RuntimeError) and isinstance(out[51], UnknownAccount)
    assert account(store).balance == 10_100
    with pytest.raises(WriterStopped):
        w.submit(lambda tx: None)
    bal, _, _ = ledger_sums(store)
    assert bal == 10_100
    with store.read() as v:  # the rerun in nested txns kept the ledger contiguous and chained
        journal = list(v.journal())
        mine = list(v.ledger(A))
        assert [e.position for e in journal] == list(range(1, len(journal) + 1))
        assert [e.position for e in mine] == [e.position for e in journal if e.account_id == A]
        assert [e.seq for e in mine] == list(range(1, len(mine) + 1))
        assert [e.seq for e in v.ledger(A, after_seq=40)] == list(range(41, len(mine) + 1))
        assert [e.ref for e in journal[-3:]] == ["ok2-47", "ok2-48", "ok2-49"]


def test_ledger_chains_interleaved_accounts_across_processes(tmp_path):
    """Entries of several accounts written by this process and by another one (the CLI beside a
    server) share one append-only journal; each account's chain finds exactly its own."""
    path = tmp_path / "chain"
    s = open_store(path)
    for acct in ("a", "b", "c"):
        s.execute(lambda tx, acct=acct: ops.create_account(tx, None, account_id=acct,
                                                          currency="EUR", balance=100))
    for i in range(30):
        s.execute(lambda tx, i=i: ops.topup(tx, f"t{i}", "abc"[i % 3], i + 1))
    proc = multiprocessing.get_context("spawn").Process(target=_topup_in_child, args=(str(path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    s.execute(lambda tx: ops.topup(tx, "last", "a", 1))
    with s.read() as v:
        journal = list(v.journal())
        assert [e.position for e in journal] == list(range(1, len(journal) + 1))
        for acct in ("a", "b", "c"):
            chain = list(v.ledger(acct))
            assert chain == [e for e in journal if e.account_id == acct]
            assert sum(e.delta for e in chain) == v.get_account(acct).balance
    s.close()


def _topup_in_child(path: str) -> None:
    s = open_store(path)
    for i in range(5):
        s.execute(lambda tx, i=i: ops.topup(tx, f"child{i}", "b", 1000))
    s.close()


def test_idempotency_key_reused_for_another_amount_is_a_conflict(store):
    assert store.execute(lambda tx: ops.topup(tx, "pay-1", A, 5)) == 10_005
    assert store.execute(lambda tx: ops.topup(tx, "pay-1", A, 5)) == 10_005      # a retry
    with pytest.raises(IdempotencyConflict, match="pay-1"):
        store.execute(lambda tx: ops.topup(tx, "pay-1", A, 7))                   # not a retry
    b1 = store.execute(lambda tx: ops.add_bundle(tx, "b-1", A, unit="seconds", amount=60))
    assert store.execute(lambda tx: ops.add_bundle(tx, "b-1", A, unit="seconds", amount=60)) == b1
    with pytest.raises(IdempotencyConflict):
        store.execute(lambda tx: ops.add_bundle(tx, "b-1", A, unit="seconds", amount=600))
    with store.read() as view:
        assert len(view.bundles(A)) == 1
    assert account(store).balance == 10_005
