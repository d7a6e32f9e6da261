"""Hypothesis stateful test: random reserve/commit/release/top-up/expire/bundle interleavings over
several accounts against a plain in-memory model; after every step the store, the model and the
ledger agree (balance == sum of ledger deltas, reserved and bundles likewise)."""

from __future__ import annotations

import copy
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from balance import ops
from balance.errors import InsufficientFunds
from balance.store import open_store
from balance.totals import ReservedTotal

P = 3  # micro-units per unit
ACCOUNTS = ["4901", "4902", "4903"]
FAR = 1 << 40  # bundle expiry far in the future: always valid


def price(n: int) -> int:
    return n * P


def afford(m: int) -> int:
    return m // P


class Model:
    def __init__(self) -> None:
        self.acct: dict[str, dict] = {}
        self.bundles: dict[str, dict[str, dict]] = {}  # account -> bundle id -> bundle
        self.resv: dict[tuple[str, int], dict] = {}

    def applicable(self, a: str, rg: int) -> list[dict]:
        found = [b for b in self.bundles[a].values() if not b["rgs"] or rg in b["rgs"]]
        return sorted(found, key=lambda b: (-b["prio"], b["exp"], int(b["id"])))

    def unhold(self, res: dict) -> None:
        for bid, amt in res["holds"]:
            self.bundles[res["acct"]][bid]["res"] -= amt
        self.acct[res["acct"]]["reserved"] -= res["money"]

    def reserve(self, a: str, sess: str, rg: int, units: int, aon: bool, exp: int) -> int | None:
        """Granted units; None when refused (nothing changes)."""
        acct = self.acct[a]
        old = self.resv.get((sess, rg))
        saved = (acct["reserved"], {k: dict(b) for k, b in self.bundles[a].items()})
        if old:
            self.unhold(old)
        holds, got = [], 0
        for b in self.applicable(a, rg):
            take = min(b["rem"] - b["res"], units - got)
            if take > 0:
                b["res"] += take
                holds.append([b["id"], take])
                got += take
        n = units - got
        avail = max(0, acct["balance"] + acct["limit"] - acct["reserved"])
        if price(n) > avail:
            if aon:
                acct["reserved"], self.bundles[a] = saved
                return None
            n = afford(avail)
        acct["reserved"] += price(n)
        self.resv.pop((sess, rg), None)
        if got + n:
            self.resv[(sess, rg)] = {"acct": a, "holds": holds, "money": price(n), "exp": exp}
        return got + n

    def commit(self, a: str, sess: str, rg: int, used: int) -> tuple[int, int]:
        acct = self.acct[a]
        res = self.resv.pop((sess, rg), None)
        got = 0
        if res:
            for h in res["holds"]:
                b = self.bundles[a][h[0]]
                take = min(h[1], used - got)
                b["rem"] -= take
                b["res"] -= take
                h[1] -= take
                got += take
        for b in self.applicable(a, rg):
            take = min(b["rem"] - b["res"], used - got)
            if take > 0:
                b["rem"] -= take
                got += take
        cost = price(used - got)
        debited = 0
        if res:
            take = min(res["money"], cost)
            acct["balance"] -= take
            acct["reserved"] -= take
            res["money"] -= take
            debited = take
            self.unhold(res)
        take = min(max(0, acct["balance"] + acct["limit"] - acct["reserved"]), cost - debited)
        acct["balance"] -= take
        debited += take
        return debited, cost - debited


class BalanceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ocs-stateful-")
        self.store = open_store(self.dir, sync=False)
        self.model = Model()
        self.n = 0
        self.done: list[tuple] = []  # (key, fn, outcome) for replays
        self.total = ReservedTotal()  # its first scan at the first check
        self.late_total: ReservedTotal | None = None

    def key(self) -> str:
        self.n += 1
        return f"k{self.n}"

    def run(self, fn):  # type: ignore[no-untyped-def]
        return self.store.execute(fn)

    @initialize(balances=st.lists(st.integers(0, 3000), min_size=3, max_size=3),
                limits=st.lists(st.sampled_from([0, 0, 500]), min_size=3, max_size=3))
    def setup(self, balances: list[int], limits: list[int]) -> None:
        for a, bal, lim in zip(ACCOUNTS, balances, limits, strict=True):
            self.run(lambda tx, a=a, bal=bal, lim=lim: ops.create_account(
                tx, None, account_id=a, currency="EUR", balance=bal, credit_limit=lim))
            self.model.acct[a] = {"balance": bal, "limit": lim, "reserved": 0}
            self.model.bundles[a] = {}

    @rule(a=st.sampled_from(ACCOUNTS), amount=st.integers(1, 2000))
    def topup(self, a: str, amount: int) -> None:
        k = self.key()
        fn = lambda tx: ops.topup(tx, k, a, amount)  # noqa: E731
        assert self.run(fn) == self.model.acct[a]["balance"] + amount
        self.model.acct[a]["balance"] += amount
        self.done.append((k, fn, self.model.acct[a]["balance"]))

    @rule(a=st.sampled_from(ACCOUNTS), amount=st.integers(1, 300), rgs=st.sampled_from([[], [1], [2]]),
          prio=st.integers(0, 2), exp=st.sampled_from([FAR, FAR + 1, FAR + 2]))
    def bundle(self, a: str, amount: int, rgs: list[int], prio: int, exp: int) -> None:
        bid = self.run(lambda tx: ops.add_bundle(tx, self.key(), a, unit="seconds", amount=amount,
                                                 rating_groups=rgs, priority=prio, expires=exp))
        self.model.bundles[a][bid] = {"id": bid, "rem": amount, "res": 0, "rgs": rgs,
                                      "prio": prio, "exp": exp}

    @rule(a=st.sampled_from(ACCOUNTS), s=st.integers(0, 2), rg=st.integers(1, 2),
          units=st.integers(0, 400), aon=st.booleans(), exp=st.sampled_from([100, 200, 300]))
    def reserve(self, a: str, s: int, rg: int, units: int, aon: bool, exp: int) -> None:
        sess, k = f"{a}-{s}", self.key()
        fn = lambda tx: ops.reserve(tx, k, account_id=a, session_id=sess, rating_group=rg,  # noqa: E731
                                    unit="seconds", units=units, price=price, afford=afford,
                                    all_or_nothing=aon, expires_at=exp)
        want = self.model.reserve(a, sess, rg, units, aon, exp)
        try:
            got = self.run(fn)
        except InsufficientFunds:
            assert want is None
            return
        assert got.units_granted == want
        self.done.append((k, fn, got))

    @rule(a=st.sampled_from(ACCOUNTS), s=st.integers(0, 2), rg=st.integers(1, 2),
          used=st.integers(0, 500))
    def commit(self, a: str, s: int, rg: int, used: int) -> None:
        sess, k = f"{a}-{s}", self.key()
        fn = lambda tx: ops.commit(tx, k, account_id=a, session_id=sess, rating_group=rg,  # noqa: E731
                                   used_units=used, price=price, unit="seconds")
        got = self.run(fn)
        before = self.model.acct[a]["balance"]
        assert (got.money_debited, got.shortfall) == self.model.commit(a, sess, rg, used)
        assert got.from_balance == before - self.model.acct[a]["balance"]  # cash, not money bundles
        self.done.append((k, fn, got))

    @rule(a=st.sampled_from(ACCOUNTS), s=st.integers(0, 2), rg=st.integers(1, 2),
          used=st.integers(0, 500), units=st.integers(0, 400), exp=st.sampled_from([100, 200, 300]))
    def commit_and_reserve(self, a: str, s: int, rg: int, used: int, units: int, exp: int) -> None:
        """The CCR-U op must equal commit() followed by reserve() (up to available)."""
        sess, k = f"{a}-{s}", self.key()
        fn = lambda tx: ops.commit_and_reserve(  # noqa: E731
            tx, k, account_id=a, session_id=sess, rating_group=rg, used_units=used, used_price=price,
            unit="seconds", units=units, price=price, afford=afford, all_or_nothing=False,
            expires_at=exp)
        got_commit, got_hold = self.run(fn)
        assert (got_commit.money_debited, got_commit.shortfall) == self.model.commit(a, sess, rg, used)
        assert got_hold.units_granted == self.model.reserve(a, sess, rg, units, False, exp)
        self.done.append((k, fn, (got_commit, got_hold)))

    @rule(a=st.sampled_from(ACCOUNTS), s=st.integers(0, 2), rg=st.integers(1, 2))
    def release(self, a: str, s: int, rg: int) -> None:
        sess = f"{a}-{s}"
        self.run(lambda tx: ops.release(tx, self.key(), account_id=a, session_id=sess,
                                        rating_group=rg))
        res = self.model.resv.pop((sess, rg), None)
        if res:
            self.model.unhold(res)

    @rule(a=st.sampled_from(ACCOUNTS), rg=st.integers(1, 2), units=st.integers(1, 400))
    def covers(self, a: str, rg: int, units: int) -> None:
        """CHECK_BALANCE's answer equals what an all-or-nothing reserve would do (model copy)."""
        got = self.run(lambda tx: ops.covers(tx, account_id=a, rating_group=rg, unit="seconds",
                                             units=units, price=price))
        probe = copy.deepcopy(self.model)
        assert got == (probe.reserve(a, f"{a}-probe", rg, units, True, FAR) is not None)

    @rule(now=st.sampled_from([150, 250, 350]))
    def expire(self, now: int) -> None:
        gone = self.run(lambda tx: ops.expire_reservations(tx, now=now))
        want = sorted(k for k, r in self.model.resv.items() if r["exp"] <= now)
        assert sorted((s, rg) for s, rg, _ in gone) == want
        for k in want:
            self.model.unhold(self.model.resv.pop(k))

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        if not self.done:
            return
        _, fn, outcome = data.draw(st.sampled_from(self.done))
        assert self.run(fn) == outcome  # model unchanged: the invariants check nothing moved

    @rule()
    def start_reserved_total(self) -> None:
        """A second running total whose first scan comes after some traffic."""
        if self.late_total is None:
            self.late_total = ReservedTotal()

    @invariant()
    def reserved_totals_follow_the_journal(self) -> None:
        want = sum(m["reserved"] for m in self.model.acct.values())
        with self.store.read() as v:
            for total in (self.total, self.late_total):
                if total is not None:
                    assert total.update(v) == want

    @invariant()
    def store_matches_model_and_ledger(self) -> None:
        if not self.model.acct:
            return
        with self.store.read() as v:
            for a, m in self.model.acct.items():
                acct = v.get_account(a)
                assert (acct.balance, acct.reserved) == (m["balance"], m["reserved"])
                assert acct.balance >= -acct.credit_limit
                entries = list(v.ledger(a))
                assert sum(e.delta for e in entries) == acct.balance
                assert sum(e.reserved_delta for e in entries) == acct.reserved
                per_bundle: dict[str, int] = {}
                for e in entries:
                    for bid, rem, _ in e.bundles:
                        per_bundle[bid] = per_bundle.get(bid, 0) + rem
                bundles = {b.id: (b.remaining, b.reserved) for b in v.bundles(a)}
                assert bundles == {bid: (b["rem"], b["res"]) for bid, b in self.model.bundles[a].items()}
                assert all(per_bundle[bid] == rem for bid, (rem, _) in bundles.items())
                resv = {(r.session_id, r.rating_group): (r.money_held, sorted(map(tuple, r.holds)))
                        for r in v.reservations(a)}
                want = {k: (r["money"], sorted(tuple(h) for h in r["holds"] if h[1]))
                        for k, r in self.model.resv.items() if r["acct"] == a}
                assert resv == want
                assert acct.reserved == sum(r[0] for r in resv.values())

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


BalanceMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestBalanceStateful = BalanceMachine.TestCase
