"""Many asyncio tasks reserving and committing on one postpaid account through the group-commit
writer: the account never goes below -credit_limit and every debit is accounted for."""

from __future__ import annotations

import asyncio
import random

from balance import ops
from balance.errors import InsufficientFunds
from balance.store import open_store
from balance.writer import GroupCommitWriter

A = "491700000042"
LIMIT = 50_000
START = 200_000


def price(n: int) -> int:
    return n * 7


def afford(m: int) -> int:
    return m // 7


async def test_concurrent_reserve_commit_never_overdraws(tmp_path):
    store = open_store(tmp_path / "c", sync=True)
    store.execute(lambda tx: ops.create_account(tx, None, account_id=A, currency="EUR",
                                                balance=START, credit_limit=LIMIT))
    writer = GroupCommitWriter(store, max_batch=64)
    writer.start()
    debited: list[int] = []
    shortfall: list[int] = []
    low: list[int] = []
    rng = random.Random(1234)

    async def session(t: int) -> None:
        for j in range(15):
            sess, aon, want = f"s{t}-{j}", rng.random() < 0.3, rng.randint(1, 400)
            try:
                r = await writer.submit(lambda tx, s=sess, w=want, aon=aon: ops.reserve(
                    tx, f"r-{s}", account_id=A, session_id=s, rating_group=1, unit="seconds",
                    units=w, price=price, afford=afford, all_or_nothing=aon,
                    expires_at=tx.now + 60))
            except InsufficientFunds:
                continue
            used = r.units_granted + rng.choice([0, 0, 5])  # sometimes beyond the grant
            c = await writer.submit(lambda tx, s=sess, u=used: ops.commit(
                tx, f"c-{s}", account_id=A, session_id=s, rating_group=1, used_units=u,
                price=price))
            debited.append(c.money_debited)
            shortfall.append(c.shortfall)
            with store.read() as v:  # reads never wait for the writer
                low.append(v.get_account(A).balance)

    await asyncio.wait_for(asyncio.gather(*(session(t) for t in range(100))), timeout=120)
    await writer.stop()
    with store.read() as v:
        acct = v.get_account(A)
        entries = list(v.ledger(A))
        assert v.reservations(A) == []
    store.close()
    assert acct.balance == START - sum(debited)
    assert acct.balance >= -LIMIT and min(low) >= -LIMIT
    assert acct.reserved == 0
    assert sum(e.delta for e in entries) == acct.balance
    assert acct.balance < 0 or sum(shortfall) == 0  # money ran out before any shortfall
    assert writer.stats.ops >= len(debited) * 2 and writer.stats.batches < writer.stats.ops
