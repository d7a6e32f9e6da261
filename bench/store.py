"""Durable reserve+commit pairs per second: one txn per op vs group commit (same run, as a ratio).

    python -m bench.store [--pairs N] [--tasks N] [--accounts N]

Every variant runs with sync on: an op counts as done only once its commit is fdatasynced, and a
pair's commit is submitted only after its reserve is done (as a gateway's CCR-U follows the CCA).
- one txn per op: the baseline;
- group commit, asyncio: N tasks each doing reserve then commit through GroupCommitWriter.submit
  (the writer thread beside an event loop: what an embedding in the network process would do);
- group commit, engine style: one thread runs batches back to back with commit_batch and a syncer
  thread completes them (the charging engine's loop, no event loop in the process), with a per-op
  idempotency key, and without (key=None: the caller deduplicates, as the charging server does
  with the request numbers it keeps in its session record).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from balance import ops
from balance.records import CommitResult, ReserveResult
from balance.store import Store, Tx, open_store
from balance.writer import GroupCommitWriter

PRICE_PER_UNIT = 10  # micro-units per second


def price(n: int) -> int:
    return n * PRICE_PER_UNIT


def afford(money: int) -> int:
    return money // PRICE_PER_UNIT


def _tag(i: int) -> str:
    """Pair i's session id / idempotency key suffix: scattered over the key space (Knuth's
    multiplicative hash), as UUIDs or gateway session ids are, so that pairs running at the same
    time do not get adjacent keys (which would make the B-tree writes look like appends)."""
    return f"{(i * 2654435761) & 0xFFFFFFFF:08x}{i:08x}"


def _pair(ids: list[str], i: int, keyed: bool = True
          ) -> tuple[Callable[[Tx], ReserveResult], Callable[[Tx], CommitResult]]:
    """Pair i's reserve and commit ops (its account, session id and, when keyed, idempotency keys)."""
    acct, tag = ids[i % len(ids)], _tag(i)
    session = f"sess-{tag}"
    return (_reserve(acct, session, f"r{tag}" if keyed else None),
            _commit(acct, session, f"c{tag}" if keyed else None))


def _setup(store: Store, accounts: int) -> list[str]:
    ids = [f"4917{i:08d}" for i in range(accounts)]

    def create(tx: Tx) -> None:
        for acct in ids:
            ops.create_account(tx, None, account_id=acct, currency="EUR", balance=10**15)
    store.execute(create)
    return ids


def _reserve(acct: str, session: str, key: str | None) -> Callable[[Tx], ReserveResult]:
    def fn(tx: Tx) -> ReserveResult:
        return ops.reserve(tx, key, account_id=acct, session_id=session, rating_group=1,
                           unit="seconds", units=60, price=price, afford=afford,
                           all_or_nothing=False, expires_at=tx.now + 600)
    return fn


def _commit(acct: str, session: str, key: str | None) -> Callable[[Tx], CommitResult]:
    def fn(tx: Tx) -> CommitResult:
        return ops.commit(tx, key, account_id=acct, session_id=session, rating_group=1,
                          used_units=42, price=price)
    return fn


def one_txn_per_op(path: str, pairs: int, accounts: int) -> float:
    store = open_store(path)
    ids = _setup(store, accounts)
    t0 = time.perf_counter()
    for i in range(pairs):
        reserve, commit = _pair(ids, i)
        store.execute(reserve)
        store.execute(commit)
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
            reserve, commit = _pair(ids, i)
            r = await writer.submit(reserve)
            assert r.units_granted == 60
            await writer.submit(commit)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    dt = time.perf_counter() - t0
    await writer.stop()
    return per_task * tasks / dt, writer


def group_commit(path: str, pairs: int, tasks: int, accounts: int) -> tuple[float, GroupCommitWriter]:
    store = open_store(path)
    ids = _setup(store, accounts)
    runner: Callable[[Coroutine[Any, Any, tuple[float, GroupCommitWriter]]],
                     tuple[float, GroupCommitWriter]]
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    rate, writer = runner(_group(store, ids, pairs, tasks))
    store.close()
    return rate, writer


def engine_style(path: str, pairs: int, in_flight: int, accounts: int,
                 keyed: bool) -> tuple[float, GroupCommitWriter]:
    """Batches back to back on this thread; a syncer thread makes them durable and acknowledges
    them; reserves acknowledged are followed by their commits in the next batch."""
    store = open_store(path)
    ids = _setup(store, accounts)
    writer = GroupCommitWriter(store)
    committed: collections.deque[list[tuple[str, int] | None]] = collections.deque()
    acked: collections.deque[int] = collections.deque()     # pair numbers whose reserve is durable
    wake, idle = threading.Event(), threading.Event()
    done = [0]

    def syncer() -> None:
        while True:
            wake.wait()
            wake.clear()
            while committed:
                ready = []
                while committed:
                    ready.extend(committed.popleft())
                if ready == [None]:
                    return
                store.sync_meta()
                for kind, i in cast("list[tuple[str, int]]", ready):  # not the stop mark [None]
                    if kind == "r":
                        acked.append(i)
                    else:
                        done[0] += 1
                idle.set()

    th = threading.Thread(target=syncer, daemon=True)
    th.start()
    nxt = 0
    t0 = time.perf_counter()
    while done[0] < pairs:
        batch: list[tuple[Callable[[Tx], object], tuple[str, int]]] = []
        while acked:
            i = acked.popleft()
            batch.append((_pair(ids, i, keyed)[1], ("c", i)))
        while nxt < pairs and nxt - done[0] < in_flight:
            batch.append((_pair(ids, nxt, keyed)[0], ("r", nxt)))
            nxt += 1
        if not batch:
            idle.wait(0.01)
            idle.clear()
            continue
        for target, result, exc in writer.commit_batch(batch):
            if exc is not None or (target[0] == "r" and result.units_granted != 60):
                raise RuntimeError(f"{target}: {exc or result}")
        committed.append([t for _fn, t in batch])
        wake.set()
    dt = time.perf_counter() - t0
    committed.append([None])
    wake.set()
    th.join()
    store.close()
    return pairs / dt, writer


def _line(label: str, rate: float, base: float, w: GroupCommitWriter) -> None:
    st = w.stats
    print(f"{label:42s}: {rate:8,.0f} pairs/s = {rate / base:5.1f}x   (batches {st.batches}, "
          f"mean {st.ops / max(1, st.batches):.0f} ops, commit "
          f"{st.commit_seconds / max(1, st.ops) * 1e6:.1f} µs/op)")


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
        print(f"{'one durable txn per op (baseline)':42s}: {base:8,.0f} pairs/s")
        rate, w = group_commit(f"{root}/group", args.pairs, args.tasks, args.accounts)
        _line(f"group commit, asyncio, {args.tasks} tasks, keyed", rate, base, w)
        rate, w = engine_style(f"{root}/eng-k", args.pairs, args.tasks, args.accounts, True)
        _line(f"group commit, engine style, {args.tasks} in flight, keyed", rate, base, w)
        rate, w = engine_style(f"{root}/eng-n", args.pairs, args.tasks, args.accounts, False)
        _line("  the same, caller-deduplicated (key=None)", rate, base, w)
        print("(keyed: each op stores its idempotency key; the issue's target: >= 30,000 pairs/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
