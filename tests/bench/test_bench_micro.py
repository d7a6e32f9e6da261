"""The engine-v2 micro-benchmarks still run and print their lines (tiny sizes; no timing asserts):
a benchmark that rots is found here, not when its figures are next needed for the README."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("module", "args", "expect"), [
    ("bench.ccr_scan", ["--runs", "1", "--batches", "3"], "ccr_batch.scan"),
    ("bench.journal", ["--runs", "1", "--batches", "5"], "Journal.append"),
    ("bench.hot_index", ["--keys", "5000", "--runs", "1", "--batches", "5"], "lookup_batch"),
    ("bench.hot_accounts", ["--accounts", "3000", "--calls", "200"], "checkpoint"),
    ("bench.hot_sessions", ["--sessions", "2000", "--calls", "200", "--dirty", "500"], "checkpoint"),
])
def test_micro_benchmark_runs(module: str, args: list[str], expect: str) -> None:
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert expect in r.stdout, r.stdout[-3000:]
    assert "Traceback" not in r.stderr
