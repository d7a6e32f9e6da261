"""The charging engine's own cost per CCR-U, in process: no network, no front, no load generator.

    python -m bench.engine [--sessions 128] [--batch 64] [--rounds 150]

What the server cannot go below on one core, whatever the network does: N open data sessions,
then rounds of one CCR-U each (usage + a new quota request), decoded and applied through
credit.process in write batches as the engine runs them. In one run:
- decode only (the baseline: the codec's share);
- decode + ops, commits not synced;
- decode + ops + durable commits (fdatasync per batch, meta sync per round), as served, without
  and with the tariff schedule check the engine makes before each batch (alternated runs).
Each prints µs per request, its ratio to the baseline and the requests/s one core would allow.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from functools import partial

from balance.store import open_store
from balance.writer import GroupCommitWriter
from bench.provision import DEFAULT_TARIFF, provision
from bench.templates import Template, make_templates, session_tail
from bench.workload import INITIAL, UPDATE, account_id
from ocs.charging import credit
from ocs.charging.settings import ChargingSettings
from ocs.charging.tariffs import Raters
from ocs.config import ServeConfig
from protocol.ccr import decode_ccr
from protocol.records import CCR
from rating import rater as rating_rater
from rating.tariff_store import TariffStore

ACCOUNTS = 1000


def _frames(templates: dict[tuple[str, int], Template], kind: int, sessions: int, number: int,
            used: int) -> list[bytes]:
    t = templates[("data", kind)]
    return [bytes(t.render(number, number, session_tail(1, s), number, account_id(s % ACCOUNTS).encode(),
                           used)) for s in range(sessions)]


def measure(sync: bool, sessions: int, batch: int, rounds: int,
            follow: bool = True) -> tuple[float, float, float]:
    """(decode µs, decode + ops + commit µs, tariff check µs) per CCR-U over `rounds` after a
    warm-up. `follow`: read the tariff change count before each batch, as the engine does
    (read-your-writes for tariffs); off, the engine as it was before that check."""
    root = tempfile.mkdtemp(prefix="ocs-bench-engine-")
    try:
        provision(root, accounts=ACCOUNTS, balance=10**12, tariff_path=DEFAULT_TARIFF)
        store = open_store(root, sync=sync)
        raters = Raters(TariffStore(store))
        ctx = credit.Context(ChargingSettings.of(ServeConfig(data=root)), credit.open_dbs(store), raters)
        writer = GroupCommitWriter(store)
        rating_rater.warm()
        templates = make_templates(origin_host="bench.client", origin_realm="bench.realm",
                                   destination_realm="ocs.realm")

        checked = [0.0]

        def apply(ccrs: list[CCR]) -> None:
            for lo in range(0, len(ccrs), batch):
                if follow:
                    t = time.thread_time()  # CPU time: a 1 µs step drowns in preemption here
                    raters.refresh()
                    checked[0] += time.thread_time() - t
                out = writer.commit_batch([(partial(credit.process, ctx=ctx, ccr=c), None)
                                           for c in ccrs[lo:lo + batch]])
                if out[0][2] is not None:
                    raise out[0][2]
            store.sync_meta()

        apply([decode_ccr(f) for f in _frames(templates, INITIAL, sessions, 0, 0)])
        t_dec = t_all = 0.0
        checked[0] = 0.0
        warmup = max(1, rounds // 8)
        for r in range(1, warmup + rounds + 1):
            frames = _frames(templates, UPDATE, sessions, r, 1000)
            t0 = time.perf_counter()
            ccrs = [decode_ccr(f) for f in frames]
            t1 = time.perf_counter()
            apply(ccrs)
            t2 = time.perf_counter()
            if r > warmup:
                t_dec += t1 - t0
                t_all += t2 - t0
            elif r == warmup:
                checked[0] = 0.0
        store.close()
        n = rounds * sessions
        return t_dec / n * 1e6, t_all / n * 1e6, checked[0] / n * 1e6
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3, help="alternated durable runs per variant")
    args = ap.parse_args(argv)
    nosync_dec, nosync_all, _ = measure(False, args.sessions, args.batch, args.rounds)
    # Without and with the per-batch tariff check, alternated so drift hits both alike.
    without, with_check, checks = [], [], []
    decs = [nosync_dec]
    for _ in range(args.repeats):
        dec, total, _ = measure(True, args.sessions, args.batch, args.rounds, follow=False)
        without.append(total)
        decs.append(dec)
        dec, total, check = measure(True, args.sessions, args.batch, args.rounds, follow=True)
        with_check.append(total)
        checks.append(check)
        decs.append(dec)
    base = statistics.median(decs)
    sync_without, sync_all = statistics.median(without), statistics.median(with_check)
    print(f"CCR-U, {args.sessions} sessions, write batches of {args.batch}, "
          f"{args.rounds} rounds (µs per request; x baseline; one core's ceiling)")
    for label, us in (("decode only (baseline)", base), ("decode + ops, no sync", nosync_all),
                      ("durable, no tariff check", sync_without),
                      ("decode + ops + durable commit", sync_all)):
        print(f"  {label:31s} {us:7.1f} µs  x{us / base:5.2f}  {1e6 / us:>9,.0f} req/s")
    print(f"  per-batch tariff check: {statistics.median(checks):.3f} µs per request "
          f"(CPU time, timed directly); with / without the check: x{sync_all / sync_without:.3f} "
          f"(medians of {args.repeats} alternated runs)")


if __name__ == "__main__":
    main()
