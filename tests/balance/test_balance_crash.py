"""Crash safety: a child hammers the store through the group-commit writer and prints each op's
idempotency key only after its future completed; we SIGKILL it at random moments, reopen, and
check every printed op is durable, none applied twice, and the ledger sums to the balance."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter

from msgpack import unpackb

from balance import ops
from balance.store import open_store

PRICE = 3
START = 10**12

CHILD = r"""
import asyncio, sys
from balance import ops
from balance.store import open_store
from balance.writer import GroupCommitWriter

path, run = sys.argv[1], sys.argv[2]
store = open_store(path)
store.execute(lambda tx: ops.create_account(tx, "setup", account_id="A", currency="EUR",
                                            balance=START))
price = lambda n: n * PRICE

async def main():
    w = GroupCommitWriter(store)
    w.start()
    out = sys.stdout
    print("ready", flush=True)
    async def worker(t):
        for i in range(10**9):
            sid = f"{run}-{t}-{i}"
            await w.submit(lambda tx: ops.reserve(
                tx, "r-" + sid, account_id="A", session_id=sid, rating_group=1, unit="seconds",
                units=20, price=price, afford=lambda m: m // PRICE, all_or_nothing=True,
                expires_at=tx.now + 60))
            await w.submit(lambda tx: ops.commit(tx, "c-" + sid, account_id="A", session_id=sid,
                                                 rating_group=1, used_units=10, price=price))
            out.write("c-" + sid + "\n"); out.flush()
            await w.submit(lambda tx: ops.topup(tx, "t-" + sid, "A", 1))
            out.write("t-" + sid + "\n"); out.flush()
    await asyncio.gather(*(worker(t) for t in range(32)))

asyncio.run(main())
""".replace("START", str(START)).replace("PRICE", str(PRICE))


def _round(path: str, run: int, rng: random.Random) -> list[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == b"ready\n", proc.stderr.read()
        time.sleep(rng.uniform(0.2, 1.2))
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return [line for line in out.decode().splitlines() if line]  # a cut last line cannot match


def test_sigkill_loses_no_completed_op_and_applies_none_twice(tmp_path):
    path = str(tmp_path / "crash")
    rng = random.Random(20240601)
    printed: list[str] = []
    for run in range(5):
        printed += _round(path, run, rng)
        store = open_store(path)
        try:
            with store.read() as v:
                idem = v.dbs["idem"]
                missing = [k for k in printed if v.txn.get(k.encode(), db=idem) is None]
                acct = v.get_account("A")
                entries = list(v.ledger("A"))
                open_money = sum(r.money_held for r in v.reservations("A"))
            assert not missing, missing[:5]
            refs = Counter(e.ref for e in entries)
            assert max(refs.values()) == 1  # every op (by key) applied once
            commits = sum(1 for e in entries if e.kind == "commit")
            topups = sum(1 for e in entries if e.kind == "topup")
            assert acct.balance == START - commits * 10 * PRICE + topups
            assert sum(e.delta for e in entries) == acct.balance
            assert acct.reserved == open_money == sum(e.reserved_delta for e in entries)
            # replaying printed ops after the crash changes nothing
            before = acct.balance
            for key in rng.sample(printed, min(20, len(printed))):
                with store.read() as v:
                    first_op = unpackb(v.txn.get(key.encode(), db=v.dbs["idem"]))[1]
                if first_op == "topup":
                    store.execute(lambda tx, k=key: ops.topup(tx, k, "A", 1))
            with store.read() as v:
                assert v.get_account("A").balance == before
        finally:
            store.close()
    assert len(printed) > 100
