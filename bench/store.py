"""Durable reserve+commit pairs per second: one txn per op vs group commit (same run, as a ratio).

    python -m bench.store [--pairs N] [--tasks N] [--accounts N]

Both variants run with sync on (every answered op is fsynced); the group-commit variant runs N
asyncio tasks, each doing reserve then commit through the GroupCommitWriter.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time

from balance import ops
from balance.store import Store, open_store
from balance.writer import GroupCommitWriter

PRICE_PER_UNIT = 10  # micro-units per second


def price(n: int) -> int:
    return n * PRICE_PER_UNIT


def afford(money: int) -> int:
    return money // PRICE_PER_UNIT


def _setup(store: Store, accounts: int) -> list[str]:
    ids = [f"4917{i:08d}" for i in range(accounts)]

    def create(tx):  # type: ignore[no-untyped-def]
        for acct in ids:
            ops.create_account(tx, None, account_id=acct, currency="EUR", balance=10**15)
    store.execute(create)
    return ids


def _reserve(acct: str, session: str, key: str):  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        return ops.reserve(tx, key, account_id=acct, session_id=session, rating_group=1,
                           unit="seconds", units=60, price=price, afford=afford,
                           all_or_nothing=False, expires_at=tx.now + 600)
    return fn


def _commit(acct: str, session: str, key: str):  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        return ops.commit(tx, key, account_id=acct, session_id=session, rating_group=1,
                          used_units=42, price=price)
    return fn


def one_txn_per_op(path: str, pairs: int, accounts: int) -> float:
    store = open_store(path)
    ids = _setup(store, accounts)
    t0 = time.perf_counter()
    for i in range(pairs):
        acct, session = ids[i % len(ids)], f"sess-{i}"
        store.execute(_reserve(acct, session, f"r{i}"))
        store.execute(_commit(acct, session, f"c{i}"))
    dt = time.perf_counter() - t0
    store.close()
    return pairs / dt


async def _group(store: Store, ids: list[str], pairs: int, tasks: int) -> tuple[float, GroupCommitWriter]:
    writer = GroupCommitWriter(store)
    writer.start()
    per_task = pairs // tasks

    async def worker(t: int) -> None:
        for j in range(per_task):
            i = t * per_task + j
            acct, session = ids[i % len(ids)], f"sess-{i}"
            r = await writer.submit(_reserve(acct, session, f"r{i}"))
            assert r.units_granted == 60
            await writer.submit(_commit(acct, session, f"c{i}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    dt = time.perf_counter() - t0
    await writer.stop()
    return per_task * tasks / dt, writer


def group_commit(path: str, pairs: int, tasks: int, accounts: int) -> tuple[float, GroupCommitWriter]:
    store = open_store(path)
    ids = _setup(store, accounts)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    rate, writer = runner(_group(store, ids, pairs, tasks))
    store.close()
    return rate, writer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--baseline-pairs", type=int, default=1_000)
    ap.add_argument("--tasks", type=int, default=512)
    ap.add_argument("--accounts", type=int, default=1000)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ocs-bench-store-")
    try:
        base = one_txn_per_op(f"{root}/one", args.baseline_pairs, args.accounts)
        print(f"one durable txn per op : {base:10,.0f} reserve+commit pairs/s")
        rate, w = group_commit(f"{root}/group", args.pairs, args.tasks, args.accounts)
        st = w.stats
        print(f"group commit ({args.tasks} tasks): {rate:10,.0f} reserve+commit pairs/s "
              f"= {rate / base:.1f}x one-txn-per-op  (target >= 30,000 pairs/s)")
        print(f"  batches {st.batches}, mean batch {st.ops / max(1, st.batches):.0f} ops, "
              f"commit {st.commit_seconds / max(1, st.batches) * 1e6:.0f} µs/batch")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
