"""commit_and_reserve with a Pricing object (the charging rules' cumulative rating) leaves the
same balances, holds and bundles as commit() then reserve() priced by hand: the grant priced after
the money units the commit settled, passed explicitly (no call-order-dependent closure state)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balance import ops
from balance.pricing import MONEY, PriceFn, Pricing, pricing_of
from balance.store import Store, open_store

FAR = 1 << 40


@dataclass(slots=True, frozen=True)
class Stepped:
    """Cumulative rating like the tariff's: a connect fee on the burst's first unit, then `price`
    per started increment of `inc` units, counted from `before` units already paid."""

    before: int
    price: int
    inc: int
    fee: int
    limit: int = 10_000

    def _total(self, units: int) -> int:
        return 0 if units == 0 else self.fee + -(-units // self.inc) * self.price

    def cost(self, settled: int, n: int) -> int:
        b = self.before + settled
        return self._total(b + n) - self._total(b) if n > 0 else 0

    def afford(self, settled: int, budget: int) -> int:
        lo, hi = 0, self.limit  # the largest n with cost(settled, n) <= budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.cost(settled, mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    path = tempfile.mkdtemp(prefix="ocs-pricing-")
    s = open_store(path, sync=False)
    yield s
    s.close()
    shutil.rmtree(path, ignore_errors=True)


_ids = itertools.count()


def snapshot(store: Store, account_id: str, session_id: str) -> tuple[object, ...]:
    with store.read() as view:
        acct = view.get_account(account_id)
        res = view.get_reservation(session_id, 7)
        bundles = [(b.id, b.remaining, b.reserved) for b in view.bundles(account_id)]
    held = None if res is None else (res.units_granted, res.money_held, res.holds)
    return acct.balance, acct.reserved, bundles, held


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(balance=st.integers(0, 20_000), credit_limit=st.sampled_from([0, 500]),
       unit_bundle=st.integers(0, 300), money_bundle=st.integers(0, 2_000),
       first=st.integers(0, 400), used=st.integers(0, 600), units=st.integers(0, 400),
       before=st.integers(0, 200), used_price=st.integers(0, 50), grant_price=st.integers(0, 50),
       inc=st.sampled_from([1, 10, 60]), fee=st.sampled_from([0, 7]))
def test_commit_and_reserve_equals_commit_then_reserve(
        store: Store, balance: int, credit_limit: int, unit_bundle: int, money_bundle: int,
        first: int, used: int, units: int, before: int, used_price: int, grant_price: int,
        inc: int, fee: int) -> None:
    n = next(_ids)
    one, two = f"a{n}", f"b{n}"
    for acct in (one, two):
        def setup(tx, acct=acct):  # type: ignore[no-untyped-def]
            ops.create_account(tx, None, account_id=acct, currency="EUR", balance=balance,
                               credit_limit=credit_limit)
            if unit_bundle:
                ops.add_bundle(tx, None, acct, unit="seconds", amount=unit_bundle, expires=FAR)
            if money_bundle:
                ops.add_bundle(tx, None, acct, unit="money", amount=money_bundle, expires=FAR)
            ops.reserve(tx, None, account_id=acct, session_id=acct, rating_group=7,
                        unit="seconds", units=first, price=Stepped(before, used_price, inc, fee),
                        all_or_nothing=False, expires_at=FAR)
        store.execute(setup)
    usage = Stepped(before, used_price, inc, fee)
    grant = Stepped(before, grant_price, inc, fee, limit=units)

    together = store.execute(lambda tx: ops.commit_and_reserve(
        tx, None, account_id=one, session_id=one, rating_group=7, used_units=used,
        used_price=usage, unit="seconds", units=units, price=grant, all_or_nothing=False,
        expires_at=FAR))

    def by_hand(tx):  # type: ignore[no-untyped-def]
        done = ops.commit(tx, None, account_id=two, session_id=two, rating_group=7,
                          used_units=used, unit="seconds", price=lambda k: usage.cost(0, k))
        m = done.money_units  # the grant is rated after the units the commit paid with money
        held = ops.reserve(tx, None, account_id=two, session_id=two, rating_group=7,
                           unit="seconds", units=units, price=lambda k: grant.cost(m, k),
                           afford=lambda budget: grant.afford(m, budget), all_or_nothing=False,
                           expires_at=FAR)
        return done, held
    apart = store.execute(by_hand)

    assert together == apart
    assert snapshot(store, one, one) == snapshot(store, two, two)


def test_plain_functions_and_money_are_pricings() -> None:
    flat: Pricing = pricing_of(lambda k: 3 * k, lambda m: m // 3)
    assert isinstance(flat, PriceFn)
    assert (flat.cost(0, 5), flat.cost(40, 5), flat.afford(9, 10)) == (15, 15, 3)
    assert pricing_of(MONEY) is MONEY and (MONEY.cost(3, 5), MONEY.afford(3, 8)) == (5, 8)
