"""Rating benchmarks, as ratios within one run: `python -m bench.rating [--quick]`.

1. batch kernel on a 3-band / 2-tier plan vs the Decimal oracle and a numpy version of the simple
   formula (records/s);  2. per-request call cost: kernel from Python vs the pure-Python fast path
   (median ns);  3. cold start in a fresh process with and without the numba cache;
4. `ocs rerate` end to end over 1M CDRs in a CSV file (subprocess wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rating import kernel, reference
from rating.rater import rater_for, warm
from rating.tariff import Rate, Tariff, parse_tariff

TARIFF = '''currency = "EUR"
[[plan]]
name = "bench"
timezone = "Europe/Paris"
[[rate]]
plan = "bench"
rating_group = 1
unit = "seconds"
price = "0.02"
increment = 60
connect_fee = "0.05"
[[rate.tier]]
from = 36000
price = "0.015"
[[rate.band]]
name = "evening"
days = "mon-fri"
from = "19:00"
to = "24:00"
price = ["0.01", "0.008"]
[[rate.band]]
name = "night"
days = "mon-fri"
from = "00:00"
to = "08:00"
price = ["0.01", "0.008"]
[[rate.band]]
name = "weekend"
days = "sat,sun"
from = "00:00"
to = "00:00"
price = ["0.005", "0.004"]
[[rate]]
plan = "bench"
rating_group = 2
unit = "seconds"
price = "0.02"
increment = 60
connect_fee = "0.05"
'''
MAR = 1709251200   # 2024-03-01T00:00:00Z: the month holds the EU DST change


def _rate(t: Tariff, rating_group: int) -> Rate:
    """The bench plan's rate for rating_group (TARIFF has rating groups 1 and 2)."""
    rate = t.find("bench", rating_group)
    if rate is None:
        raise LookupError(f"TARIFF has no rate for rating group {rating_group}")
    return rate


def median_time(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median CPU seconds of this process (single-threaded code: time on one core; unlike wall time
    it does not count waiting for a core on a shared machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def per_call_ns(fn: Callable[[], Any], n: int) -> float:
    """Median over 7 rounds of the mean ns per call in a loop of n calls (loop overhead included)."""
    def loop() -> None:
        for _ in range(n):
            fn()
    return median_time(loop, 7) / n * 1e9


def bench_batch(n: int) -> dict[str, float]:
    t = parse_tariff(TARIFF)
    rater = rater_for(t, 1)
    rng = np.random.default_rng(1)
    units = rng.integers(1, 3600, n)
    start = MAR + rng.integers(0, 31 * 86400, n)
    period = rng.integers(0, 72000, n)
    before = np.zeros(n, dtype=np.int64)
    plan = np.zeros(n, dtype=np.int64)
    rg1 = np.ones(n, dtype=np.int64)
    out_c, out_r = np.empty(n, np.int64), np.empty(n, np.int64)
    blob = rater.blob
    kernel.rate_batch(blob, plan[:10], rg1[:10], units[:10], start[:10], period[:10], before[:10],
                      out_c[:10], out_r[:10])
    tb = median_time(lambda: kernel.rate_batch(blob, plan, rg1, units, start, period, before,
                                               out_c, out_r))
    idx = np.zeros(n, dtype=np.int64)
    ti = median_time(lambda: kernel.rate_batch_idx(blob, idx, units, start, period, before, out_c))
    # simple formula on the same volume: kernel (rg 2) and vectorised numpy
    rg2 = rg1 * 2
    ts = median_time(lambda: kernel.rate_batch(blob, plan, rg2, units, start, period, before,
                                               out_c, out_r))
    simple = _rate(t, 2)

    def numpy_simple() -> np.ndarray:
        f, inc = simple.first_increment, simple.increment
        n_inc = np.where(units <= f, 1, 2 + (units - f - 1) // inc)
        return np.where(units > 0, simple.connect_fee + n_inc * simple.price, 0)

    assert (numpy_simple() == out_c).all()
    tn = median_time(numpy_simple)
    # the Decimal oracle on a sample
    m = 2000
    banded = _rate(t, 1)
    to = median_time(lambda: [reference.cost(t, banded, 0, int(units[i]), int(start[i]),
                                             int(period[i])) for i in range(m)], 3)
    kernel.rate_batch(blob, plan, rg1, units, start, period, before, out_c, out_r)
    assert all(out_c[i] == reference.cost(t, banded, 0, int(units[i]), int(start[i]), int(period[i]))
               for i in range(200))
    return {"kernel_banded": n / tb, "kernel_banded_idx": n / ti, "kernel_simple": n / ts,
            "numpy_simple": n / tn, "oracle_banded": m / to}


def bench_per_request() -> dict[str, float]:
    t = parse_tariff(TARIFF)
    rater = rater_for(t, 1)
    banded, simple = _rate(t, 1), _rate(t, 2)
    blob = rater.blob
    n = 100_000
    cost = rater.cost
    return {
        "rater_cost_fast_path_ns": per_call_ns(lambda: cost(simple, 120, 95, MAR, 0), n),
        "rater_cost_kernel_ns": per_call_ns(lambda: cost(banded, 120, 95, MAR, 0), n),
        "kernel_direct_ns": per_call_ns(lambda: kernel.cost_one(blob, 0, 120, 95, MAR, 0), n),
        "rater_max_units_fast_path_ns": per_call_ns(
            lambda: rater.max_units(simple, 500_000, 120, MAR, 0), n),
        "rater_max_units_kernel_ns": per_call_ns(
            lambda: rater.max_units(banded, 500_000, 120, MAR, 0), n),
        "empty_lambda_ns": per_call_ns(lambda: None, n),
    }


COLD = ("import time; t0 = time.perf_counter(); from rating.rater import rater_for, warm; "
        "from rating.tariff import parse_tariff; from bench.rating import TARIFF; t1 = time.perf_counter(); "
        "warm(); t2 = time.perf_counter(); print(t1 - t0, t2 - t1)")


def bench_cold() -> dict[str, float]:
    out = {}
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", COLD], check=True, capture_output=True, env=env)  # fill cache
    for label, extra in (("cached", {}), ("no_cache", None)):
        walls, firsts = [], []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as d:
                e = dict(env)
                if extra is None:
                    e["NUMBA_CACHE_DIR"] = d
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", COLD], check=True, capture_output=True,
                                   text=True, env=e)
                walls.append(time.perf_counter() - t0)
                firsts.append(float(r.stdout.split()[1]))
        out[f"{label}_process_s"] = statistics.median(walls)
        out[f"{label}_warm_call_s"] = statistics.median(firsts)
    return out


def write_cdrs_csv(path: Path, n: int) -> None:
    """n CDR rows in the export's CSV columns, generated column-wise with pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    from ocs.billing.cdr import COLUMNS
    rng = np.random.default_rng(2)
    kinds = rng.integers(0, 3, n)
    rg = np.array([100, 200, 300])[kinds]
    unit = np.array(["seconds", "octets", "events"])[kinds]
    used = np.where(kinds == 0, rng.integers(1, 3600, n),
                    np.where(kinds == 1, rng.integers(1, 1 << 30, n), rng.integers(1, 4, n)))
    start = MAR + rng.integers(0, 31 * 86400, n)
    micro = rng.integers(0, 2_000_000, n)
    amount = pc.binary_join_element_wise(
        pa.array(micro // 1_000_000).cast(pa.string()),
        pc.utf8_lpad(pa.array(micro % 1_000_000).cast(pa.string()), width=6, padding="0"), ".")
    ts = pa.array(start, pa.timestamp("s", tz="UTC"))
    iso = pc.strftime(ts, format="%Y-%m-%dT%H:%M:%SZ")
    ids = np.arange(1, n + 1)
    cols = {
        "cdr_id": ids, "session_id": pc.binary_join_element_wise("s", pa.array(ids).cast(pa.string()), ""),
        "account_id": pc.binary_join_element_wise(
            "+336", pa.array(rng.integers(10_000_000, 10_050_000, n)).cast(pa.string()), ""),
        "subscription_id": pa.array(["x"] * n), "plan": pa.array(np.where(
            rng.random(n) < 0.8, "default", "postpaid")),
        "rating_group": rg, "service_identifier": pa.nulls(n, pa.int64()), "unit": pa.array(unit),
        "used_units": used, "amount": amount, "currency": pa.array(["EUR"] * n),
        "tariff_version": np.ones(n, np.int64), "start_time": iso,
        "end_time": pc.strftime(pa.array(start + 60, pa.timestamp("s", tz="UTC")),
                                format="%Y-%m-%dT%H:%M:%SZ"),
        "termination_cause": pa.array(["NORMAL"] * n), "origin_host": pa.array(["pgw1"] * n),
        "bundle_units": np.zeros(n, np.int64), "request_type": pa.array(["SESSION"] * n),
    }
    table = pa.table({k: cols[k] for k in COLUMNS})
    pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(quoting_style="none"))


def bench_rerate(n: int) -> dict[str, float]:
    example = str(resources.files("ocs") / "data" / "example-tariff.toml")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cdrs.csv"
        write_cdrs_csv(path, n)
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ocs", "rerate", "--cdrs", str(path),
                            "--tariffs", example], check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
        return {"rerate_rows": n, "rerate_file_mb": path.stat().st_size / 1e6,
                "rerate_wall_s": statistics.median(walls)}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.rating")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = ap.parse_args()
    warm()
    n = 200_000 if args.quick else 2_000_000
    b = bench_batch(n)
    print(f"batch, {n} records, 3 bands x 2 tiers, Europe/Paris, 1-3600 s calls (records/s):")
    for k, v in b.items():
        print(f"  {k:<20} {v:14,.0f} /s   x{v / b['oracle_banded']:8.0f} oracle   "
              f"x{v / b['numpy_simple']:6.2f} numpy simple")
    print(f"  target: kernel_banded >= 10 M/s -> {'MET' if b['kernel_banded'] >= 10e6 else 'NOT MET'}")
    p = bench_per_request()
    print("per request (median ns per call, Python loop included):")
    for k, v in p.items():
        print(f"  {k:<30} {v:8.0f} ns")
    print(f"  kernel path / fast path: x{p['rater_cost_kernel_ns'] / p['rater_cost_fast_path_ns']:.2f}")
    c = bench_cold()
    print("cold start in a fresh process (import + warm(), median of 3):")
    for k, v in c.items():
        print(f"  {k:<24} {v:7.2f} s")
    print(f"  no cache / cached warm(): x{c['no_cache_warm_call_s'] / c['cached_warm_call_s']:.1f}")
    r = bench_rerate(100_000 if args.quick else 1_000_000)
    print(f"ocs rerate end to end: {r['rerate_rows']} CDRs, {r['rerate_file_mb']:.0f} MB CSV: "
          f"{r['rerate_wall_s']:.2f} s  (target < 10 s -> "
          f"{'MET' if r['rerate_wall_s'] < 10 else 'NOT MET'})")


if __name__ == "__main__":
    main()
