"""The accounts table (ocs.charging.hot.accounts) against reading and writing Account records.

    python -m bench.hot_accounts [--accounts 1000000] [--chunk 4096]

A durable store (sync on) of --accounts accounts with one alias each (MSISDN ids, IMSI aliases),
provisioned with direct LMDB puts of Account.pack records in txns of 100,000. Then, in one run:
load (the whole table) against View.get_account of every id (the baseline: Account objects, one
get + unpack each); the table's memory (its arrays' bytes, and the process RSS growth over the
load); record() and put_record() per call; checkpoints of 10,000 and of 100,000 dirty rows at
random (the first dirtied through the columns as a kernel does, the second by put_record) against
the same number of Account records written with tx.put per record in one txn. One run of each:
this VM is shared and noisy, so read the ratios, not the third digit.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np

from balance.records import Account
from balance.schema import ACCOUNTS, ALIASES
from balance.store import Store, Tx, open_store
from ocs.charging.hot import accounts as H

PROVISION_TXN = 100_000


def account(i: int) -> Account:
    return Account(f"4917{i:08d}", "EUR", 10**9 + i * 1000, 0, 0, ("default", "gold", "silver")[i % 3],
                   "suspended" if i % 97 == 0 else "active", [f"26201{i:010d}"], 1_700_000_000 + i,
                   1_700_000_000 + i, 3, 0, 0, 1 + 3 * i)


def provision(store: Store, n: int) -> None:
    for start in range(0, n, PROVISION_TXN):
        def fn(tx: Tx, start: int = start) -> None:
            t, accounts, aliases = tx.write_txn, tx.dbs[ACCOUNTS], tx.dbs[ALIASES]
            for i in range(start, min(n, start + PROVISION_TXN)):
                a = account(i)
                key = a.id.encode()
                t.put(key, a.pack(), db=accounts)
                t.put(a.aliases[0].encode(), key, db=aliases)
        store.execute(fn)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def put_each(store: Store, accts: list[Account]) -> None:
    """The baseline write: tx.put of Account.pack per record, one txn."""
    def fn(tx: Tx) -> None:
        for a in accts:
            tx.put(ACCOUNTS, a.id.encode(), a.pack())
    store.execute(fn)


def warm_up(root: str) -> None:
    """Compile (or load from numba's cache) every kernel load and put_record use."""
    with open_store(os.path.join(root, "warm"), sync=False) as s:
        provision(s, 10)
        with s.read() as v:
            t = H.load(v)
        H.put_record(t, account(11))
        H.checkpoint(t, s.execute)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=H.CHUNK, help="rows per checkpoint txn")
    ap.add_argument("--calls", type=int, default=100_000, help="record() / put_record() calls")
    a = ap.parse_args(argv)
    n = a.accounts
    rng = np.random.default_rng(14)
    with tempfile.TemporaryDirectory(prefix="ocs-bench-hot-accounts-") as root:
        warm_up(root)
        store = open_store(os.path.join(root, "data"), map_size=4 << 30)
        try:
            return run(store, n, a.chunk, min(a.calls, n), rng)
        finally:
            store.close()


def run(store: Store, n: int, chunk: int, calls: int, rng: np.random.Generator) -> int:
    provision_s = timed(lambda: provision(store, n))
    ids = [f"4917{i:08d}" for i in range(n)]
    with store.read() as v:
        base_load_s = timed(lambda: [v.get_account(i) for i in ids])
        gc.collect()
        before = rss()
        t0 = time.perf_counter()
        t = H.load(v)
        load_s = time.perf_counter() - t0
        gc.collect()
        grown = rss() - before
        sample = rng.choice(n, size=min(n, 2000), replace=False).tolist()
        assert all(H.record(t, r) == v.get_account(t.id_bytes(r).decode()) for r in sample)
    assert t.rows == n and len(t.aliases) == n and t.row_of(f"26201{n - 1:010d}") == n - 1

    rows = rng.integers(0, n, size=calls).tolist()
    record_us = timed(lambda: [H.record(t, r) for r in rows]) / calls * 1e6
    with store.read() as v:
        get_us = timed(lambda: [v.get_account(ids[r]) for r in rows]) / calls * 1e6
    changed = [H.record(t, r) for r in rows]
    for acct in changed:
        acct.balance -= 1

    mib = 2**20
    print(f"{n:,} accounts, one alias each (durable store, sync on; checkpoint chunk {chunk:,} rows)")
    print(f"  provision (Account.pack puts, txns of {PROVISION_TXN:,})   {provision_s:7.2f} s")
    print(f"  load                                      {load_s:7.2f} s   "
          f"View.get_account of every id {base_load_s:6.2f} s   x{load_s / base_load_s:.2f}")
    print(f"  memory: table arrays {t.nbytes() / mib:7.1f} MiB ({t.nbytes() / n:.0f} B/account; "
          f"indexes {(t.ids.nbytes() + t.aliases.nbytes()) / mib:.1f} MiB); RSS growth over the "
          f"load {grown / mib:.1f} MiB")
    print(f"  record()      {record_us:6.2f} µs   View.get_account {get_us:6.2f} µs   "
          f"x{record_us / get_us:.2f}")

    # checkpoint of 10,000 rows dirtied through the columns, as a kernel would
    lines = []
    dirty = rng.choice(n, size=min(n, 10_000), replace=False)
    t.balance[dirty] -= 7
    for r in dirty.tolist():
        H.touch(t, r)
    others = [H.record(t, r) for r in rng.choice(n, size=dirty.size, replace=False).tolist()]
    base_s = timed(lambda: put_each(store, others))
    ck_s = timed(lambda: H.checkpoint(t, store.execute, chunk=chunk))
    lines.append((dirty.size, "columns", ck_s, base_s))

    # checkpoint of the put_record rows (100,000 by default)
    put_us = timed(lambda: [H.put_record(t, acct) for acct in changed]) / calls * 1e6
    ndirty = int(t.meta[H.M_DIRTY])
    others = [H.record(t, r) for r in rng.choice(n, size=ndirty, replace=False).tolist()]
    base_s = timed(lambda: put_each(store, others))
    ck_s = timed(lambda: H.checkpoint(t, store.execute, chunk=chunk))
    lines.append((ndirty, "put_record", ck_s, base_s))
    print(f"  put_record()  {put_us:6.2f} µs (an update: same aliases)")
    for rows_, how, ck, base in lines:
        print(f"  checkpoint of {rows_:7,} dirty rows ({how:10}) {ck / rows_ * 1e6:6.2f} µs/row "
              f"({ck:5.2f} s, {-(-rows_ // chunk)} txns)   tx.put per record, one txn "
              f"{base / rows_ * 1e6:6.2f} µs/row   x{ck / base:.2f}")
    with store.read() as v:
        check = rng.choice(n, size=min(n, 2000), replace=False).tolist()
        assert all(H.record(t, r) == v.get_account(t.id_bytes(r).decode()) for r in check)
        assert all(v.get_account(a.id) == a for a in changed[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
