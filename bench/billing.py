"""Billing benchmark: CDR export and invoicing over a synthetic month.

    python -m bench.billing [--accounts 100000] [--cdrs 2000000] [--formats csv,jsonl,parquet]
                            [--pdf-sample 200]

Populates a temp store (accounts on the example tariff's plans, CDRs spread over one month), then
measures, in one run: CDRs exported per second by the continuous exporter per format, against a
baseline that only reads and decodes the same CDRs from LMDB (the ceiling); invoices per second
(JSON + HTML) against a baseline that only reads the exported CSV and groups the usage; PDF
rendering per invoice on a sample. Figures are noisy on a shared machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import calendar
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from balance import ops
from balance.schema import CDRS, EXPORT, EXPORT_CHECKPOINT, EXPORT_FILE_PREFIX
from balance.store import Store, Tx, open_store
from ocs.billing import cdr as C
from ocs.billing.cdr import layout


def populate(store: Store, accounts: int, cdrs: int, year: int, month: int, seed: int = 1) -> None:
    from rating.tariff_store import TariffStore
    text = resources.files("ocs.data").joinpath("example-tariff.toml").read_text()
    TariffStore(store).load(text, "example-tariff.toml", effective_from=calendar.timegm((year, 1, 1, 0, 0, 0)))
    ids = [f"49170{i:07d}" for i in range(accounts)]
    for lo in range(0, accounts, 5000):
        def mk(tx: Tx, lo: int = lo) -> None:
            for i in range(lo, min(lo + 5000, accounts)):
                post = i % 4 == 0
                ops.create_account(tx, None, account_id=ids[i], currency="EUR",
                                   plan="postpaid" if post else "default",
                                   balance=0 if post else 50_000_000,
                                   credit_limit=200_000_000 if post else 0)
        store.execute(mk)
    rng = random.Random(seed)
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    span = calendar.monthrange(year, month)[1] * 86400
    kinds = [(100, "seconds", 1, 900, 300), (200, "octets", 1 << 16, 1 << 27, 1), (300, "events", 1, 1, 50_000)]
    done = 0
    while done < cdrs:
        n = min(20_000, cdrs - done)

        def put(tx: Tx, n: int = n, done: int = done) -> None:
            for j in range(n):
                i = rng.randrange(accounts)
                rg, unit, lo_u, hi_u, per = kinds[(done + j) % 3]
                units = rng.randint(lo_u, hi_u)
                amount = units * per if unit != "octets" else units // 100
                t = start + rng.randrange(span - 3600)
                C.write(tx.txn, tx.dbs, C.CDR(0, f"s-{done + j}", ids[i], ids[i],
                                              "postpaid" if i % 4 == 0 else "default", rg, None, unit,
                                              units, amount, "EUR", 1, t, t + 60, "NORMAL",
                                              "pgw1.example.net"))
        store.execute(put)
        done += n


def read_baseline(store: Store) -> float:
    """Seconds to read and decode every CDR (the export's ceiling)."""
    t0 = time.perf_counter()
    n = 0
    with store.read() as view:
        for _ in layout.stored_from(view.read_txn, view.dbs[CDRS], 1):
            n += 1
    return time.perf_counter() - t0


def reset_export(store: Store) -> None:
    def fn(tx: Tx) -> None:
        cur = tx.read_txn.cursor(db=tx.dbs[EXPORT])
        keys = [k for k, _ in cur if k == EXPORT_CHECKPOINT or k.startswith(EXPORT_FILE_PREFIX)]
        for k in keys:
            tx.delete(EXPORT, k)
    store.execute(fn)


def export_once(store: Store, out: Path, fmt: str) -> float:
    from ocs.billing.export import CdrExporter
    reset_export(store)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    ex = CdrExporter(store, out, fmt, rotate_bytes=64 << 20, rotate_seconds=300,
                     max_rows_per_call=1 << 40)
    ex.run_once(0.0)
    ex.close()
    return time.perf_counter() - t0


def _timed(fn: Callable[..., object], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.billing", description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--cdrs", type=int, default=2_000_000)
    ap.add_argument("--formats", default="csv,jsonl,parquet")
    ap.add_argument("--pdf-sample", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args(argv)
    from ocs.billing.invoice import Period, run
    from ocs.billing.invoice.run import render_all
    from ocs.billing.invoice.usage import collect

    tmp = Path(tempfile.mkdtemp(prefix="ocs-billing-"))
    try:
        store = open_store(tmp / "data", map_size=1 << 30)
        t0 = time.perf_counter()
        populate(store, args.accounts, args.cdrs, 2024, 3)
        print(f"synthetic month 2024-03: {args.accounts} accounts, {args.cdrs} CDRs "
              f"(populated in {time.perf_counter() - t0:.1f} s)")
        base = read_baseline(store)
        print(f"baseline read+decode from LMDB: {args.cdrs / base:,.0f} CDRs/s")
        for fmt in args.formats.split(","):
            secs = export_once(store, tmp / f"cdr-{fmt}", fmt)
            size = sum(p.stat().st_size for p in (tmp / f"cdr-{fmt}").iterdir())
            print(f"export {fmt:8s}: {args.cdrs / secs:,.0f} CDRs/s  ({secs:.1f} s, "
                  f"{size / 1e6:.0f} MB, {base / secs:.2f}x of the read baseline)")
        cdr_dir = tmp / "cdr-csv"
        if not cdr_dir.exists():
            export_once(store, cdr_dir, "csv")
        period = Period(2024, 3)
        t0 = time.perf_counter()
        usage = collect(cdr_dir, period)
        read_secs = time.perf_counter() - t0
        print(f"baseline read+group CSV: {usage.cdrs / read_secs:,.0f} CDRs/s ({read_secs:.1f} s)")
        t0 = time.perf_counter()
        res = run(store, cdr_dir, period, tmp / "inv", formats=("json", "html"), progress=False)
        secs = time.perf_counter() - t0
        n = len(res.docs)
        print(f"invoice json+html ({os.cpu_count()} render processes): {n / secs:,.0f} invoices/s ({n} invoices in {secs:.1f} s; "
              f"{read_secs / secs:.2f} of it is reading the CDRs)")
        if args.pdf_sample:
            sample = res.docs[: args.pdf_sample]
            secs1 = _timed(render_all, sample, tmp / "pdf-1", ("pdf",), 1)
            print(f"pdf, one process (baseline): {len(sample) / secs1:,.0f} invoices/s "
                  f"({secs1 / len(sample) * 1000:.1f} ms each, sample of {len(sample)})")
            jobs = os.cpu_count() or 1
            secs_n = _timed(render_all, sample, tmp / "pdf-n", ("pdf",), jobs)
            print(f"pdf, {jobs} processes: {len(sample) / secs_n:,.0f} invoices/s "
                  f"({secs1 / secs_n:.2f}x the baseline)")
        store.close()
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
