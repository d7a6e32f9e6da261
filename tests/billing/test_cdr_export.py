"""CDR export: file forms, round trips, rotation, exactly-once under SIGKILL, and the `ocs cdr` CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balance.store import open_store
from ocs.billing import cdr as C
from ocs.billing.cdr import files as F
from ocs.billing.cdr import record as R
from ocs.billing.export import CdrExporter, ExportError, export_pending, read_all, read_file
from ocs.billing.export.exporter import (
    ConsumerLock,
    Intent,
    _record_intent,
    checkpoint,
    last_cdr_id,
    pending_intent,
    recover,
)
from ocs.cli import main

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\r"),
               max_size=12)
cdrs_st = st.builds(
    C.CDR, cdr_id=st.just(0), session_id=text, account_id=text, subscription_id=text, plan=text,
    rating_group=st.integers(0, 2**32 - 2), service_identifier=st.none() | st.integers(0, 2**32 - 1),
    unit=st.sampled_from(["seconds", "octets", "events", "money"]), used_units=st.integers(0, 2**62),
    amount=st.integers(-(10**17), 10**17), currency=st.sampled_from(["EUR", "USD", "JPY"]),
    tariff_version=st.integers(0, 2**31), start_time=st.integers(0, 4_000_000_000),
    end_time=st.integers(0, 4_000_000_000), termination_cause=text, origin_host=text,
    bundle_units=st.integers(0, 2**40), request_type=st.sampled_from(["SESSION", "EVENT"]))


def make_cdr(i: int, **kw: object) -> C.CDR:
    base = dict(cdr_id=0, session_id=f"sess-{i % 7}", account_id=f"4917{i % 3:07d}",
                subscription_id=f"4917{i % 3:07d}", plan="default", rating_group=100 + i % 3,
                service_identifier=None if i % 2 else 1, unit="seconds", used_units=60 + i,
                amount=1000 * i + 1, currency="EUR", tariff_version=1, start_time=1_700_000_000 + i,
                end_time=1_700_000_060 + i, termination_cause="NORMAL", origin_host='pgw,"1"')
    base.update(kw)
    return C.CDR(**base)  # type: ignore[arg-type]


def add_cdrs(store, cdrs: list[C.CDR]) -> None:  # type: ignore[no-untyped-def]
    def fn(tx):  # type: ignore[no-untyped-def]
        for c in cdrs:
            C.write(tx.txn, tx.dbs, c)
    store.execute(fn)


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = open_store(tmp_path / "data")
    yield s
    s.close()


# --- file form ---

def _dt_iso(ts: int) -> str:
    """The ISO form through datetime: what the cached R.iso must equal."""
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@given(cdrs_st)
def test_file_values_equal_to_row(cdr: C.CDR) -> None:
    from dataclasses import asdict

    from balance.money import format_micro
    raw = msgpack.unpackb(C.pack(cdr))
    want = asdict(cdr) | {"amount": format_micro(cdr.amount), "start_time": _dt_iso(cdr.start_time),
                          "end_time": _dt_iso(cdr.end_time)}
    assert dict(zip(C.COLUMNS, R.file_values(raw), strict=True)) == C.to_row(cdr) == want


@given(st.integers(0, 2**34))
def test_iso_round_trip(ts: int) -> None:
    assert R.iso(ts) == C.iso(ts) == _dt_iso(ts)
    assert R.parse_iso(R.iso(ts)) == ts


@given(st.integers(-(10**18), 10**18))
def test_parse_amount(micro: int) -> None:
    from balance.money import format_micro
    assert R.parse_amount(format_micro(micro)) == micro


@pytest.mark.parametrize("bad", ["", "1.2345678", "abc", "1.-2", "--1"])
def test_parse_amount_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        R.parse_amount(bad)


@pytest.mark.parametrize("fmt", F.FORMATS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(cdrs_st, max_size=20))
def test_round_trip(tmp_path, fmt: str, batch: list[C.CDR]) -> None:
    path = tmp_path / f"rt{F.SUFFIX[fmt]}"
    for i, c in enumerate(batch, start=1):
        c.cdr_id = i
    with open(path, "wb") as f:
        n = F.write_rows(f, fmt, [msgpack.unpackb(C.pack(c)) for c in batch], chunk=7)
    assert n == len(batch)
    assert list(read_file(path)) == batch


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_exported_files_read_back_as_the_stored_rows(store, tmp_path, fmt: str) -> None:
    """What either exporter writes, the one reader gives back: the stored CDRs as records, and the
    re-rating columns of them (through pyarrow and, for the text formats, without it)."""
    from ocs.billing.cdr import columns
    add_cdrs(store, [make_cdr(i, amount=(-1) ** i * (1000 * i + 1), origin_host='a,"b"\nc')
                     for i in range(40)])
    with store.read() as view:
        stored = list(C.iter_from(view.txn, view.dbs["cdrs"]))
    out = tmp_path / f"all{F.SUFFIX[fmt]}"
    assert export_pending(store, out, fmt, consumer="rt").count == 40
    CdrExporter(store, tmp_path / "cdr", fmt).close()
    for back in (list(read_file(out)), [c for _, c in read_all(tmp_path / "cdr")]):
        assert back == stored
        assert [C.to_row(c) for c in back] == [C.to_row(c) for c in stored]
    for use_arrow in ((True,) if fmt == "parquet" else (True, False)):
        cols = columns.read(out, use_arrow=use_arrow)
        assert cols.amount.tolist() == [c.amount for c in stored]
        assert cols.start_time.tolist() == [c.start_time for c in stored]
        assert cols.used_units.tolist() == [c.used_units for c in stored]
        assert cols.rating_group.tolist() == [c.rating_group for c in stored]
        assert [cols.account.names[i] for i in cols.account.codes] == [c.account_id for c in stored]


def test_csv_is_rfc4180(tmp_path) -> None:
    path = tmp_path / "x.csv"
    with open(path, "wb") as f:
        F.write_rows(f, "csv", [msgpack.unpackb(C.pack(make_cdr(1, cdr_id=1, origin_host='a,"b"\nc')))])
    data = path.read_bytes()
    assert data.startswith(",".join(C.COLUMNS).encode() + b"\r\n")
    assert b'"a,""b""\nc"' in data
    assert data.endswith(b"\r\n")


def test_parquet_schema_is_typed(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "x.parquet"
    with open(path, "wb") as f:
        F.write_rows(f, "parquet", [msgpack.unpackb(C.pack(make_cdr(i, cdr_id=i, amount=-1500000 * i)))
                                    for i in range(1, 4)])
    t = pq.read_table(path)
    assert t.schema.field("cdr_id").type == pa.int64()
    assert t.schema.field("used_units").type == pa.int64()
    assert t.schema.field("amount").type == pa.decimal128(18, 6)
    # Parquet has no seconds unit: whole seconds stored as TIMESTAMP(MILLIS, UTC)
    assert t.schema.field("start_time").type in (pa.timestamp("s", tz="UTC"), pa.timestamp("ms", tz="UTC"))
    logical = json.loads(pq.ParquetFile(path).schema.column(C.COLUMNS.index("start_time"))
                         .logical_type.to_json())
    assert logical["Type"] == "Timestamp" and logical["isAdjustedToUTC"] is True
    assert t.column("start_time")[0].value in (1_700_000_001, 1_700_000_001_000)
    assert [str(v) for v in t.column("amount").to_pylist()] == ["-1.500000", "-3.000000", "-4.500000"]
    assert t.column("service_identifier").null_count == 2


# --- the exporter ---

def ids_in(root: Path) -> Counter[int]:
    return Counter(c.cdr_id for _, c in read_all(root))


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_rotation_by_size(store, tmp_path, fmt: str) -> None:
    add_cdrs(store, [make_cdr(i) for i in range(3000)])
    out = tmp_path / "cdr"
    ex = CdrExporter(store, out, fmt, rotate_bytes=40_000 if fmt != "parquet" else 8_000,
                     rotate_seconds=3600)
    sealed = ex.run_once(1000.0)
    assert len(sealed) >= 2
    rest = ex.close()
    files = sorted(out.iterdir())
    assert [p.name for p in files] == sorted(p.name for p in sealed + rest)
    if fmt != "parquet":   # parquet sizes are only known per row group, text files are near the limit
        assert all(p.stat().st_size < 40_000 * 1.2 for p in files[:-1])
        assert all(p.stat().st_size >= 40_000 for p in files[:-1])
    assert ids_in(out) == Counter(range(1, 3001))
    with store.read() as view:
        assert checkpoint(view) == 3000


def test_close_while_a_pass_runs_in_another_thread(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Shutdown closes the exporter while the housekeeping thread may be mid-pass: each CDR must
    still land in exactly one file, and nothing may be written after close."""
    import threading
    add_cdrs(store, [make_cdr(i) for i in range(40_000)])
    out = tmp_path / "cdr"
    ex = CdrExporter(store, out, "jsonl", rotate_bytes=100_000, rotate_seconds=3600)
    errors: list[BaseException] = []

    def housekeeping() -> None:
        try:
            ex.run_once(1000.0)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=housekeeping)
    t.start()
    time.sleep(0.05)            # the pass is sealing its first files
    ex.close()
    t.join(30)
    assert errors == [] and not t.is_alive()
    assert ex.run_once(2000.0) == []            # closed: nothing more
    assert ids_in(out) == Counter(range(1, 40_001))
    with store.read() as view:
        assert checkpoint(view) == 40_000 and pending_intent(view) is None


def test_rotation_by_age(store, tmp_path) -> None:
    out = tmp_path / "cdr"
    ex = CdrExporter(store, out, "jsonl", rotate_bytes=1 << 30, rotate_seconds=10)
    add_cdrs(store, [make_cdr(i) for i in range(5)])
    assert ex.run_once(100.0) == []             # opened at t=100, not complete yet
    assert list(out.iterdir()) != [] and not list(out.glob("*.jsonl"))
    add_cdrs(store, [make_cdr(i) for i in range(5)])
    assert ex.run_once(105.0) == []
    sealed = ex.run_once(110.0)
    assert [p.name for p in sealed] == [f"cdrs-{1:016d}-{10:016d}.jsonl"]
    assert ex.run_once(200.0) == []             # nothing new: no empty file
    assert ex.close() == []
    assert ids_in(out) == Counter(range(1, 11))


def test_one_exporter_per_consumer_at_a_time(store, tmp_path) -> None:
    """The server's exporter and an on-demand consumer run side by side; a second server-files
    exporter, or a second run of one consumer, is refused and writes nothing."""
    add_cdrs(store, [make_cdr(i) for i in range(4)])
    ex = CdrExporter(store, tmp_path / "cdr")
    with pytest.raises(ExportError, match="server's file export is running"):
        CdrExporter(store, tmp_path / "cdr2")
    res = export_pending(store, tmp_path / "x.csv", "csv")
    assert (res.count, res.first, res.last) == (4, 1, 4)
    held = ConsumerLock(store.path, "export")
    try:
        with pytest.raises(ExportError, match="another export for consumer export is running"):
            export_pending(store, tmp_path / "y.csv", "csv")
        assert not (tmp_path / "y.csv").exists()
    finally:
        held.release()
    ex.close()
    assert ids_in(tmp_path / "cdr") == Counter(range(1, 5)) == ids_in(tmp_path / "x.csv")
    res = export_pending(store, tmp_path / "y.csv", "csv")
    assert (res.count, res.path) == (0, None) and not (tmp_path / "y.csv").exists()


def test_unfinished_intent_is_redone_once(store, tmp_path) -> None:
    add_cdrs(store, [make_cdr(i) for i in range(50)])
    target = tmp_path / "crashed.csv"
    # the state a kill leaves after the intent is durable: intent, a half-written temp file
    _record_intent(store, Intent(str(target), "csv", 1, 30))
    (tmp_path / ".crashed.csv.part").write_bytes(b"cdr_id,sess")
    with store.read() as view:
        assert pending_intent(view) is not None
    out = tmp_path / "cdr"
    ex = CdrExporter(store, out, "csv")          # recovers first
    ex.close()
    assert ids_in(target) == Counter(range(1, 31))
    assert ids_in(out) == Counter(range(31, 51))
    with store.read() as view:
        assert pending_intent(view) is None and checkpoint(view) == 50
    assert recover(store) is None
    assert not (tmp_path / ".crashed.csv.part").exists()


WORKER = textwrap.dedent("""
    import sys, time
    from balance.store import open_store
    from ocs.billing import cdr as C
    from ocs.billing.export import CdrExporter
    data, out, fmt, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = open_store(data)
    ex = CdrExporter(store, out, fmt, rotate_bytes=3000, rotate_seconds=0.05)
    print("ready", flush=True)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 20:
        def fn(tx):
            for _ in range(25):
                C.write(tx.txn, tx.dbs, C.CDR(0, f"s{seed}-{i}", "49", "49", "default", 1, None,
                                               "events", 1, 10, "EUR", 1, 0, 1, "EVENT", "h"))
        store.execute(fn)
        i += 1
        ex.run_once()
""")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_sigkill_exactly_once(tmp_path, fmt: str) -> None:
    data, out = tmp_path / "data", tmp_path / "cdr"
    rng = random.Random(6)
    for rnd in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(data), str(out), fmt, str(rnd)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
            time.sleep(rng.uniform(0.1, 1.2))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    store = open_store(data)
    try:
        with store.read() as view:
            last = last_cdr_id(view)
        ex = CdrExporter(store, out, fmt)
        ex.close()
        assert last > 0
        assert ids_in(out) == Counter(range(1, last + 1))   # every CDR exactly once
        assert not list(out.glob(".*"))
    finally:
        store.close()


# --- CLI ---

def test_cli_export_show_stats(store, tmp_path, capsys) -> None:
    add_cdrs(store, [make_cdr(i) for i in range(10)])
    data = str(store.path)
    assert main(["cdr", "export", "--out", str(tmp_path / "a.jsonl"), "--data", data]) == 0
    assert ids_in(tmp_path / "a.jsonl") == Counter(range(1, 11))
    add_cdrs(store, [make_cdr(i) for i in range(10, 13)])
    assert main(["cdr", "export", "--out", str(tmp_path / "b.out"), "--format", "csv", "--data", data]) == 0
    assert ids_in_csv(tmp_path / "b.out") == [11, 12, 13]
    capsys.readouterr()
    assert main(["cdr", "stats", "--json", "--data", data]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["count"], st["exported"], st["pending"]) == (13, 13, 0)
    by = {r["rating_group"]: r for r in st["by_rating_group"]}
    # ids 1..13 are make_cdr(0..12): rating group 100 gets i = 0,3,6,9,12
    assert by[100]["count"] == 5 and by[100]["amount"] == "0.030005"
    assert st["first_time"] == "2023-11-14T22:13:20Z"
    assert main(["cdr", "show", "--session", "sess-1", "--json", "--data", data]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["cdr_id"] for r in rows] == [2, 9]


def ids_in_csv(path: Path) -> list[int]:
    import csv
    with open(path, newline="") as f:
        return [int(r["cdr_id"]) for r in csv.DictReader(f)]


def test_cli_errors_change_nothing(store, tmp_path, capsys) -> None:
    add_cdrs(store, [make_cdr(i) for i in range(3)])
    data = str(store.path)
    (tmp_path / "exists.csv").write_text("keep")
    cases = [
        ["cdr", "export", "--out", str(tmp_path / "exists.csv"), "--data", data],
        ["cdr", "export", "--out", str(tmp_path / "nodir" / "x.csv"), "--data", data],
        ["cdr", "show", "--session", "nope", "--data", data],
        ["cdr", "stats", "--data", str(tmp_path / "missing")],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ocs: error: ") and err.count("\n") == 1, err
    assert (tmp_path / "exists.csv").read_text() == "keep"
    with store.read() as view:
        assert checkpoint(view, "export") == 0 and pending_intent(view, "export") is None
    assert not (tmp_path / "missing").exists()


def test_cli_export_beside_the_server_exporter(store, tmp_path, capsys) -> None:
    """Formerly refused; now the CLI export is its own consumer (the same consumer twice is not:
    tests/test_cdr_consumers.py)."""
    add_cdrs(store, [make_cdr(1)])
    ex = CdrExporter(store, tmp_path / "cdr")
    try:
        assert main(["cdr", "export", "--out", str(tmp_path / "x.csv"), "--data", str(store.path)]) == 0
        assert "exported 1 CDRs (ids 1..1) for consumer export" in capsys.readouterr().out
        assert ids_in(tmp_path / "x.csv") == Counter([1])
        assert main(["cdr", "export", "--consumer", "server-files", "--out", str(tmp_path / "y.csv"),
                     "--data", str(store.path)]) == 2
        assert "server's own file export" in capsys.readouterr().err
        assert not (tmp_path / "y.csv").exists()
    finally:
        ex.close()
    assert ids_in(tmp_path / "cdr") == Counter([1])
