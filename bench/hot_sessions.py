"""The sessions table (ocs.charging.hot.sessions) against reading and writing Session records.

    python -m bench.hot_sessions [--sessions 100000] [--chunk 4096]

A durable store (sync on) of --sessions open sessions, each with one rating group and two kept
answers of ~300 bytes (a CCR-I and a CCR-U answered), provisioned by sessions.save in txns of
100,000. Then, in one run: load (the whole table) against sessions.load of every id (the
baseline: Session objects, one get + unpack each); the table's memory (its arrays' bytes, and
the process RSS growth over the load); record() and put_record() per call against sessions.load
and sessions.save per call; a checkpoint of 10,000 dirty rows (an update each: seen moved, an
answer added, the group's usage grown) against sessions.save of the same records in one txn.
One run of each: this VM is shared and noisy, so read the ratios, not the third digit.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import numpy as np

from balance.schema import SESSIONS
from balance.store import Store, Tx, open_store
from bench.hot_accounts import rss, timed  # the same measuring helpers as the accounts bench
from ocs.charging import sessions as S
from ocs.charging.hot import sessions as H

PROVISION_TXN = 100_000
T0 = 1_760_000_000


def session(i: int) -> S.Session:
    sid = f"pgw-{i % 4}.example.net;{T0 + i // 1000};{i}"
    s = S.Session(sid, f"4917{i:08d}", f"4917{i:08d}", ("default", "gold")[i % 2], "EUR", 3,
                  f"pgw-{i % 4}.example.net", T0 + i % 3600, T0 + i % 3600 + 60, seen_low=1,
                  groups={100: S.RatingGroupState("time", 60, 60, 0, 12_000, T0, T0 + 60, 0, None,
                                                  True, False, 120)})
    for n in range(2):
        S.remember_answer(s, n, s.origin_host, 10_000 * i + n, bytes([n, i % 256]) * 150)
    return s


def provision(store: Store, n: int) -> None:
    for start in range(0, n, PROVISION_TXN):
        def fn(tx: Tx, start: int = start) -> None:
            for i in range(start, min(n, start + PROVISION_TXN)):
                S.save(tx.write_txn, tx.dbs, session(i), force=True)
        store.execute(fn)


def update(s: S.Session, k: int) -> None:
    """What a CCR-U does to the record: activity, a request number, an answer, the group's usage."""
    s.seen += 30
    s.mark_seen(s.last_number + 1)
    S.remember_answer(s, s.last_number, s.origin_host, 7_000_000 + k, bytes([k % 256, 7]) * 150)
    g = s.groups[100]
    g.total_units += 30
    g.money_units += 30
    g.amount += 6_000


def save_each(store: Store, recs: list[S.Session]) -> None:
    """The baseline write: sessions.save per record, one txn."""
    def fn(tx: Tx) -> None:
        for s in recs:
            S.save(tx.write_txn, tx.dbs, s)
    store.execute(fn)


def warm_up(root: str) -> None:
    """Compile (or load from numba's cache) every kernel load and put_record use."""
    with open_store(os.path.join(root, "warm"), sync=False) as s:
        provision(s, 10)
        with s.read() as v:
            t = H.load(v)
        H.put_record(t, session(11))
        H.delete(t, session(3).session_id)
        H.checkpoint(t, s.execute)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=H.CHUNK, help="rows per checkpoint txn")
    ap.add_argument("--calls", type=int, default=20_000, help="record() / put_record() calls")
    ap.add_argument("--dirty", type=int, default=10_000, help="dirty rows to checkpoint")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(14)
    with tempfile.TemporaryDirectory(prefix="ocs-bench-hot-sessions-") as root:
        warm_up(root)
        store = open_store(os.path.join(root, "data"), map_size=4 << 30)
        try:
            return run(store, a.sessions, a.chunk, min(a.calls, a.sessions),
                       min(a.dirty, a.sessions), rng)
        finally:
            store.close()


def run(store: Store, n: int, chunk: int, calls: int, ndirty: int,
        rng: np.random.Generator) -> int:
    provision_s = timed(lambda: provision(store, n))
    sids = [session(i).session_id for i in range(n)]
    with store.read() as v:
        txn, dbs = v.read_txn, v.dbs
        base_load_s = timed(lambda: [S.load(txn, dbs, sid) for sid in sids])
        gc.collect()
        before = rss()
        t0 = time.perf_counter()
        t = H.load(v)
        load_s = time.perf_counter() - t0
        gc.collect()
        grown = rss() - before
        sample = rng.choice(n, size=min(n, 2000), replace=False).tolist()
        assert all(H.record(t, t.row_of(sids[i]) or 0) == S.load(txn, dbs, sids[i]) for i in sample)
        record_size = sum(len(txn.get(sids[i].encode(), b"", db=dbs[SESSIONS])) for i in sample) / len(sample)
    assert len(t) == n and not t.due_repairs

    rows = rng.integers(0, n, size=calls).tolist()
    # the sessions each part changes are distinct: the table's (put_record, checkpoint) and the
    # baseline's (sessions.save into the same store, behind the table) never meet
    perm = rng.permutation(n)
    parts = np.split(perm, np.cumsum([calls, calls, ndirty, ndirty]).clip(max=n))
    mine, theirs, dirty_rows, base_rows, untouched = (p.tolist() for p in parts)
    record_us = timed(lambda: [H.record(t, r) for r in rows]) / calls * 1e6
    with store.read() as v:
        txn, dbs = v.read_txn, v.dbs
        get_us = timed(lambda: [S.load(txn, dbs, sids[r]) for r in rows]) / calls * 1e6
    changed = [H.record(t, r) for r in mine]
    for k, s in enumerate(changed):
        update(s, k)
    put_us = timed(lambda: [H.put_record(t, s) for s in changed]) / len(changed) * 1e6
    others = [H.record(t, r) for r in theirs]
    for k, s in enumerate(others):
        update(s, k)
    save_us = timed(lambda: save_each(store, others)) / len(others) * 1e6
    # the puts above left rows dirty: checkpoint them first, outside the measurement
    H.checkpoint(t, store.execute, chunk=chunk)

    # a checkpoint of `ndirty` rows updated through put_record, against sessions.save of the
    # same updates to other sessions in one txn
    dirty = [H.record(t, r) for r in dirty_rows]
    base = [H.record(t, r) for r in base_rows]
    ndirty = len(dirty)
    for k, s in enumerate(dirty + base):
        update(s, k)
    for s in dirty:
        H.put_record(t, s)
    assert int(t.meta[H.M_DIRTY]) == ndirty
    base_s = timed(lambda: save_each(store, base))
    ck_s = timed(lambda: H.checkpoint(t, store.execute, chunk=chunk))

    mib = 2**20
    print(f"{n:,} open sessions, one rating group and two kept answers each ({record_size:.0f} B "
          f"a record; durable store, sync on; checkpoint chunk {chunk:,} rows)")
    print(f"  provision (sessions.save, txns of {PROVISION_TXN:,})   {provision_s:7.2f} s")
    print(f"  load                                      {load_s:7.2f} s   "
          f"sessions.load of every id {base_load_s:6.2f} s   x{load_s / base_load_s:.2f}")
    print(f"  memory: table arrays {t.nbytes() / mib:7.1f} MiB ({t.nbytes() / n:.0f} B/session; "
          f"index {t.ids.nbytes() / mib:.1f} MiB, answer bytes {t.answer_arena.nbytes / mib:.1f} MiB); "
          f"RSS growth over the load {grown / mib:.1f} MiB")
    print(f"  record()      {record_us:6.2f} µs   sessions.load {get_us:6.2f} µs   "
          f"x{record_us / get_us:.2f}")
    print(f"  put_record()  {put_us:6.2f} µs   sessions.save (one txn) {save_us:6.2f} µs   "
          f"x{put_us / save_us:.2f}   (an update: seen, an answer, the group's usage)")
    print(f"  checkpoint of {ndirty:7,} dirty rows  {ck_s / ndirty * 1e6:6.2f} µs/row "
          f"({ck_s:5.2f} s, {-(-ndirty // chunk)} txns)   sessions.save per record, one txn "
          f"{base_s / ndirty * 1e6:6.2f} µs/row   x{ck_s / base_s:.2f}")
    with store.read() as v:
        txn, dbs = v.read_txn, v.dbs
        assert all(S.load(txn, dbs, s.session_id) == s for s in dirty[:2000] + changed[:2000])
        assert all(H.record(t, r) == S.load(txn, dbs, t.text_bytes(r, H.T_SID).decode())
                   for r in untouched[:2000])
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
