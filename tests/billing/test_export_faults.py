"""CDR export under write failures: a full disk at every write, flush, fsync, rename and state txn of
the exporter, in turn, then recovery (the next run, or a restart as after kill -9): every CDR id is
in exactly one file, no torn row, every file parses and its name says its range.

The seam is OCS_TEST_EXPORT_FAIL=point:N (ocs.billing.export.exporter.fault): the Nth call at `point` raises
OSError(ENOSPC); at "write" half the bytes land first, like a disk filling in the middle of a row.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from balance.errors import is_write_failure
from balance.store import open_store
from ocs.billing import cdr as C
from ocs.billing.cdr import files as F
from ocs.billing.export import CdrExporter, export_pending, read_file
from ocs.billing.export import exporter as X
from ocs.billing.reconcile import Report, check_files

FORMATS = ["csv", "jsonl", "parquet"]
SAMPLE = 12        # calls at one point tried one by one; beyond, a sample (see each_call)


def make_cdr(i: int) -> C.CDR:
    return C.CDR(cdr_id=0, session_id=f"sess-{i % 7}", account_id=f"4917{i % 3:07d}",
                 subscription_id=f"4917{i % 3:07d}", plan="default", rating_group=100 + i % 3,
                 service_identifier=None if i % 2 else 1, unit="seconds", used_units=60 + i,
                 amount=1000 * i + 1, currency="EUR", tariff_version=1,
                 start_time=1_700_000_000 + i, end_time=1_700_000_060 + i,
                 termination_cause="NORMAL", origin_host='pgw,"1"')


def add_cdrs(store, n: int) -> None:  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        for i in range(n):
            C.write(tx.txn, tx.dbs, make_cdr(i))
    store.execute(fn)


def check_exactly_once(store, root: Path, total: int) -> None:  # type: ignore[no-untyped-def]
    """Every id 1..total in exactly one complete file whose name matches its rows; no temp left."""
    seen: Counter[int] = Counter()
    files = F.cdr_files(root)
    for f in files:
        ids = [c.cdr_id for c in read_file(f)]   # parses every row: a torn one raises
        seen.update(ids)
        m = re.fullmatch(r"cdrs-(\d+)-(\d+)\.\w+", f.name)
        if m:
            assert ids == list(range(int(m[1]), int(m[2]) + 1)), f.name
    assert seen == Counter(range(1, total + 1)), {k: v for k, v in seen.items() if v != 1}
    assert not [p for p in root.rglob(".*.part")], "a temp file was left behind"
    report = Report()
    check_files(store, root, report)
    assert report.ok, report.discrepancies


def fired(point: str) -> int:
    """How many calls at `point` the seam counted under the current spec."""
    return max((c for (_, p), c in X._fault_calls.items() if p == point), default=0)


def run_steps(monkeypatch, point: str, n: int, steps, recover) -> int:  # type: ignore[no-untyped-def]
    """Run the steps with the Nth call at `point` failing; on the failure call recover() and redo
    the step without the fault. Returns the calls counted at `point`."""
    X.reset_faults()
    monkeypatch.setenv(X.FAIL_ENV, f"{point}:{n}")
    failed = False
    for step in steps:
        try:
            step()
        except OSError as exc:
            assert not failed and os.environ.get(X.FAIL_ENV), exc
            assert exc.errno == errno.ENOSPC and "injected" in str(exc), exc
            assert is_write_failure(exc)
            failed = True
            monkeypatch.delenv(X.FAIL_ENV)
            recover()
            step()
    assert failed == (fired(point) >= n), "the fault fired and nothing said so"
    monkeypatch.delenv(X.FAIL_ENV, raising=False)
    return fired(point)


def each_call(point: str, case) -> int:  # type: ignore[no-untyped-def]
    """case(n) for every call n the scenario makes at `point` (counted by a run with no fault);
    many (parquet: pyarrow writes in small pieces): the first ones, the last ones and some between.
    case(n) returns how many calls at `point` the run made."""
    total = case(10**9)
    assert total >= 1, f"{point}: never reached"
    picks = set(range(1, min(total, SAMPLE) + 1)) | set(range(max(1, total - 3), total + 1))
    picks |= set(range(SAMPLE, total, max(1, total // SAMPLE)))
    for n in sorted(picks):
        assert case(n) >= n, f"{point}: call {n} of {total} not reached"
    return total


@pytest.mark.parametrize("restart", [False, True], ids=["retry", "restart"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_server_export_survives_a_failure_anywhere(tmp_path, monkeypatch, fmt, restart) -> None:  # type: ignore[no-untyped-def]
    """The server's exporter: size rotations, an age rotation, a tail sealed at close."""
    cases = iter(range(10**6))

    def case(point: str, n: int) -> int:
        d = tmp_path / f"{point}-{n}-{next(cases)}"
        store = open_store(d)
        out = d / "cdr"
        exp: list[CdrExporter] = []

        def new() -> None:
            exp.append(CdrExporter(store, out, fmt, rotate_bytes=5000, rotate_seconds=100,
                                   max_rows_per_call=150))

        def after_failure() -> None:
            # as after kill -9, or the next start after a close that failed: the open file and all
            # in-memory state are gone
            if restart or exp[-1]._closed:
                exp[-1]._lock.release()
                new()

        steps = [new,
                 lambda: add_cdrs(store, 120), lambda: exp[-1].run_once(0),
                 lambda: add_cdrs(store, 40), lambda: exp[-1].run_once(1),
                 lambda: exp[-1].run_once(500),
                 lambda: add_cdrs(store, 30), lambda: exp[-1].close()]
        try:
            calls = run_steps(monkeypatch, point, n, steps, after_failure)
            check_exactly_once(store, out, 190)
            with store.read() as view:
                assert X.checkpoint(view) == 190 and X.pending_intent(view) is None
            return calls
        finally:
            for e in exp:
                e._lock.release()
            store.close()

    for point in X.FAULT_POINTS:
        each_call(point, lambda n, p=point: case(p, n))


@pytest.mark.parametrize("fmt", FORMATS)
def test_consumer_export_survives_a_failure_anywhere(tmp_path, monkeypatch, fmt) -> None:  # type: ignore[no-untyped-def]
    """`ocs cdr export --consumer` (export_pending): a failed run, then the next run, then more."""
    cases = iter(range(10**6))
    suffix = F.SUFFIX[fmt]

    def case(point: str, n: int) -> int:
        d = tmp_path / f"{point}-{n}-{next(cases)}"
        store = open_store(d)
        out = d / "billing"
        out.mkdir()
        names = iter(range(1, 100))

        def export() -> None:
            export_pending(store, out / f"run-{next(names)}{suffix}", fmt, "billing")

        try:
            steps = [lambda: add_cdrs(store, 70), export, export,
                     lambda: add_cdrs(store, 30), export]
            calls = run_steps(monkeypatch, point, n, steps, lambda: None)
            check_exactly_once(store, out, 100)
            with store.read() as view:
                assert X.checkpoint(view, "billing") == 100
                assert X.pending_intent(view, "billing") is None
            return calls
        finally:
            store.close()

    for point in X.FAULT_POINTS:
        each_call(point, lambda n, p=point: case(p, n))


def test_cli_export_on_a_full_disk_says_so_and_the_next_run_delivers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    store = open_store(data)
    add_cdrs(store, 50)
    store.close()
    cmd = [sys.executable, "-m", "ocs", "cdr", "export", "--data", str(data), "--consumer", "billing"]
    env = {**os.environ, X.FAIL_ENV: "fsync:1"}
    first = subprocess.run([*cmd, "--out", str(tmp_path / "a.csv")], capture_output=True, text=True,
                           env=env, timeout=60)
    assert first.returncode == 2, first.stderr
    assert len(first.stderr.strip().splitlines()) == 1 and "No space left" in first.stderr, first.stderr
    assert not (tmp_path / "a.csv").exists()
    again = subprocess.run([*cmd, "--out", str(tmp_path / "b.csv")], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    store = open_store(data)
    try:
        check_exactly_once(store, tmp_path, 50)
    finally:
        store.close()


def test_health_logs_a_state_not_a_line_a_second(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from ocs.billing.export.health import ExportHealth
    log = logging.getLogger("test.export.health")
    h = ExportHealth(log)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(50):
            h.failed(full)
        h.ok()
        h.ok()
        for _ in range(30):   # a bug: its traceback once per distinct error
            try:
                raise KeyError("nope")
            except KeyError as exc:
                h.failed(exc)
        h.ok()
    recs = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(recs) == 4, recs
    assert recs[0][0] == "ERROR" and "No space left on device" in recs[0][1]
    assert recs[1][0] == "WARNING" and "50 failed attempts" in recs[1][1]
    assert caplog.records[2].exc_info is not None and "nope" in str(caplog.records[2].exc_info[1])
    assert "30 failed attempts" in recs[3][1]
