"""Invoicing: a hand-computed period (figures written by hand below), idempotent re-runs, gap-free
numbers, HTML in headless Chromium, PDF text, ERP CSV, and the `ocs invoice` CLI."""

from __future__ import annotations

import calendar
import csv
import importlib
import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balance import ops
from balance.money import to_micro
from balance.store import Tx, open_store
from ocs.billing import cdr as C
from ocs.billing.export import export_pending
from ocs.billing.invoice import Period, round_minor
from ocs.billing.invoice.numbering import last_number
from ocs.cli import main
from rating.tariff_store import TariffStore

TARIFF = """
currency = "EUR"

[[plan]]
name = "default"

[[plan]]
name = "postpaid"
recurring_fee = "19.99"
tax_rate = "0.20"
discounts = [{ threshold = "50", percent = "10" }]

[[rate]]
plan = "default"
rating_group = 100
unit = "seconds"
price = "0.02"
increment = 60

[[rate]]
plan = "default"
rating_group = 200
unit = "octets"
price = "0.01"
increment = 1048576

[[rate]]
plan = "default"
rating_group = 300
unit = "events"
price = "0.05"
increment = 1

[[rate]]
plan = "postpaid"
rating_group = 100
unit = "seconds"
price = "0.001"
increment = 1
"""


def ts(y: int, mo: int, d: int, h: int = 12, mi: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, 0))


def at(store, now: int, fn):  # type: ignore[no-untyped-def]
    """Run fn in one durable write txn whose clock reads `now` (the real ops, a chosen instant)."""
    txn = store.begin_write()
    try:
        out = fn(Tx(txn, store, now))
    except BaseException:
        store.end(txn, False)
        raise
    store.end(txn, True)
    return out


_n = [0]


def usage(store, account: str, plan: str, rg: int, unit: str, units: int, amount: str,  # type: ignore[no-untyped-def]
          end: int, session: str | None = None) -> None:
    """What the server does at a final debit: commit in the ledger and the CDR, in one txn."""
    _n[0] += 1
    sid = session or f"sess-{_n[0]}"
    micro = to_micro(amount)

    def fn(tx):  # type: ignore[no-untyped-def]
        r = ops.commit(tx, f"k{_n[0]}", account_id=account, session_id=sid, rating_group=rg,
                       used_units=units, price=lambda n: micro, unit=unit)
        assert r.money_debited == micro
        C.write(tx.txn, tx.dbs, C.CDR(0, sid, account, account, plan, rg, None, unit, units, micro,
                                      "EUR", 1, end - 60, end, "NORMAL", "pgw.test"))
    at(store, end, fn)


def build_fixture(data: Path, cdr_dir: Path) -> None:
    """March 2024 (31 days). Figures for the expected invoices are worked out by hand in the tests."""
    store = open_store(data)
    try:
        TariffStore(store).load(TARIFF, "fixture.toml", effective_from=ts(2024, 1, 1, 0))
        # A: prepaid, voice + data + SMS
        at(store, ts(2024, 2, 10), lambda tx: ops.create_account(
            tx, "cA", account_id="491000000001", currency="EUR", balance=to_micro("20")))
        usage(store, "491000000001", "default", 100, "seconds", 175, "0.06", ts(2024, 3, 2))
        usage(store, "491000000001", "default", 100, "seconds", 61, "0.045", ts(2024, 3, 5))
        usage(store, "491000000001", "default", 200, "octets", 5_242_880, "0.05", ts(2024, 3, 6))
        for d in (7, 8, 31):
            usage(store, "491000000001", "default", 300, "events", 1, "0.05", ts(2024, 3, d, 23, 59))
        usage(store, "491000000001", "default", 300, "events", 1, "0.05", ts(2024, 2, 29, 23, 59))  # Feb
        usage(store, "491000000001", "default", 300, "events", 1, "0.05", ts(2024, 4, 1, 0, 0))     # Apr
        # B: postpaid all month, with discount, a one-off charge, a credit, a top-up (a payment)
        at(store, ts(2024, 1, 1), lambda tx: ops.create_account(
            tx, "cB", account_id="491000000002", currency="EUR", plan="postpaid",
            credit_limit=to_micro("500")))
        usage(store, "491000000002", "postpaid", 100, "seconds", 40_000, "40.000000", ts(2024, 3, 10))
        usage(store, "491000000002", "postpaid", 100, "seconds", 32_345, "32.345678", ts(2024, 3, 20))
        at(store, ts(2024, 3, 12), lambda tx: ops.adjust(tx, "aB1", "491000000002", to_micro("-5"),
                                                         "SIM card replacement"))
        at(store, ts(2024, 3, 15), lambda tx: ops.adjust(tx, "aB2", "491000000002", to_micro("1.255"),
                                                         "Goodwill credit"))
        at(store, ts(2024, 2, 15), lambda tx: ops.adjust(tx, "aB3", "491000000002", to_micro("-9"),
                                                         "February charge"))
        at(store, ts(2024, 3, 16), lambda tx: ops.topup(tx, "tB", "491000000002", to_micro("100")))
        # C: postpaid created mid-month (day 11 of 31)
        at(store, ts(2024, 3, 11, 12, 34), lambda tx: ops.create_account(
            tx, "cC", account_id="491000000003", currency="EUR", plan="postpaid",
            credit_limit=to_micro("100")))
        usage(store, "491000000003", "postpaid", 100, "seconds", 120, "0.12", ts(2024, 3, 25))
        # D: prepaid, activity only in February -> no March invoice
        at(store, ts(2024, 1, 1), lambda tx: ops.create_account(
            tx, "cD", account_id="491000000004", currency="EUR", balance=to_micro("5")))
        usage(store, "491000000004", "default", 300, "events", 1, "0.05", ts(2024, 2, 3))
        # E: postpaid created in April -> no March invoice
        at(store, ts(2024, 4, 2), lambda tx: ops.create_account(
            tx, "cE", account_id="491000000005", currency="EUR", plan="postpaid"))
        cdr_dir.mkdir(parents=True, exist_ok=True)
        export_pending(store, cdr_dir / "part1.csv", "csv")
    finally:
        store.close()


@pytest.fixture(scope="module")
def period_run(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("inv")
    build_fixture(root / "data", root / "cdr")
    rc = main(["invoice", "--cdrs", str(root / "cdr"), "--period", "2024-03", "--out",
               str(root / "out"), "--data", str(root / "data")])
    assert rc == 0
    return root


def load(root: Path, number: str) -> dict:  # type: ignore[type-arg]
    return json.loads((root / "out" / f"{number}.json").read_text())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def amounts(doc: dict) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(ln["kind"], ln["amount"]) for ln in doc["lines"]]


def test_only_accounts_with_activity_or_fee(period_run) -> None:  # type: ignore[no-untyped-def]
    rows = read_csv(period_run / "out" / "invoices.csv")
    assert [(r["invoice_number"], r["account_id"]) for r in rows] == [
        ("INV-00000001", "491000000001"), ("INV-00000002", "491000000002"),
        ("INV-00000003", "491000000003")]
    assert [r["total"] for r in rows] == ["0.30", "112.62", "16.39"]


def test_prepaid_voice_data_sms(period_run) -> None:  # type: ignore[no-untyped-def]
    doc = load(period_run, "INV-00000001")
    assert doc["account_id"] == "491000000001" and doc["currency"] == "EUR"
    # voice 0.06 + 0.045 = 0.105 -> half-even 0.10 (half-up would say 0.11); 236 s = 3.93 min
    # data 5 MiB = 5.24 MB 0.05; SMS Mar 7, 8, 31 (not Feb 29, not Apr 1): 3 x 0.05 = 0.15
    assert [(ln["rating_group"], ln["quantity"], ln["unit"], ln["count"], ln["amount"])
            for ln in doc["lines"]] == [
        (100, "3.93", "min", 2, "0.10"), (200, "5.24", "MB", 1, "0.05"), (300, "3", "SMS", 3, "0.15")]
    assert (doc["net"], doc["tax"], doc["total"]) == ("0.30", "0.00", "0.30")
    assert doc["exact_total"] == "0.305000" and doc["rounding_difference"] == "-0.005000"


def test_postpaid_fee_discount_adjustments_tax(period_run) -> None:  # type: ignore[no-untyped-def]
    doc = load(period_run, "INV-00000002")
    # fee 19.99; usage 40 + 32.345678 = 72.345678 -> 72.35 (72345 s = 1205.75 min);
    # SIM -5 adjust -> +5.00; goodwill +1.255 -> -1.255 -> half-even -1.26; top-up: not a line;
    # discount 10% of (72.345678 - 50) = 2.2345678 -> 2.234567 (micro, floor) -> -2.23
    assert amounts(doc) == [("recurring", "19.99"), ("usage", "72.35"), ("adjustment", "5.00"),
                            ("adjustment", "-1.26"), ("discount", "-2.23")]
    assert doc["lines"][1]["quantity"] == "1205.75"
    assert doc["lines"][2]["description"] == "SIM card replacement"
    # net 19.99 + 72.35 + 5.00 - 1.26 - 2.23 = 93.85; tax 20% = 18.77; total 112.62
    assert (doc["net"], doc["tax_rate"], doc["tax"], doc["total"]) == ("93.85", "0.2", "18.77", "112.62")
    # exact: (19.99 + 72.345678 + 5 - 1.255 - 2.234567) x 1.2 = 93.846111 x 1.2 = 112.6153332
    assert doc["exact_total"] == "112.615333" and doc["rounding_difference"] == "0.004667"


def test_created_mid_month_pro_rata(period_run) -> None:  # type: ignore[no-untyped-def]
    doc = load(period_run, "INV-00000003")
    # created Mar 11: days 11..31 = 21 of 31; 19.99 x 21 / 31 = 13.5416129 -> 13.54; voice 0.12
    assert amounts(doc) == [("recurring", "13.54"), ("usage", "0.12")]
    assert doc["lines"][0]["quantity"] == "21"
    # net 13.66; tax 2.732 -> 2.73; total 16.39; exact 13.66161290 x 1.2 = 16.39393548
    assert (doc["net"], doc["tax"], doc["total"]) == ("13.66", "2.73", "16.39")
    assert doc["rounding_difference"] == "-0.003935"


def test_totals_add_up_to_the_cent(period_run) -> None:  # type: ignore[no-untyped-def]
    for n in (1, 2, 3):
        doc = load(period_run, f"INV-{n:08d}")
        net = sum(to_micro(ln["amount"]) for ln in doc["lines"])
        assert to_micro(doc["net"]) == net
        assert to_micro(doc["total"]) == net + to_micro(doc["tax"])
        assert to_micro(doc["total"]) % 10_000 == 0


def test_rerun_is_idempotent(period_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = {p.name: p.read_bytes() for p in (period_run / "out").iterdir()}
    assert len(before) == 3 * 3 + 1
    out2 = tmp_path / "again"
    assert main(["invoice", "--cdrs", str(period_run / "cdr"), "--period", "2024-03", "--out",
                 str(out2), "--data", str(period_run / "data")]) == 0
    assert {p.name: p.read_bytes() for p in out2.iterdir()} == before
    store = open_store(period_run / "data")
    try:
        assert last_number(store) == 3         # no number consumed by the re-run
    finally:
        store.close()


def test_rendering_in_processes_writes_the_same_bytes(period_run, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    invoice_run = importlib.import_module("ocs.billing.invoice.run")  # the package exports a run() too
    monkeypatch.setattr(invoice_run, "RENDER_CHUNK", 1)  # 3 invoices are enough to use the pool
    before = {p.name: p.read_bytes() for p in (period_run / "out").iterdir()}
    out2 = tmp_path / "pooled"
    assert main(["invoice", "--cdrs", str(period_run / "cdr"), "--period", "2024-03", "--out",
                 str(out2), "--jobs", "2", "--data", str(period_run / "data")]) == 0
    assert {p.name: p.read_bytes() for p in out2.iterdir()} == before


def test_next_period_continues_the_sequence(period_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # April: A's Apr 1 SMS, fees of B, C (and E created Apr 2: 29 of 30 days)
    assert main(["invoice", "--cdrs", str(period_run / "cdr"), "--period", "2024-04", "--out",
                 str(tmp_path / "apr"), "--formats", "json", "--data", str(period_run / "data")]) == 0
    rows = read_csv(tmp_path / "apr" / "invoices.csv")
    assert [(r["invoice_number"], r["account_id"], r["total"]) for r in rows] == [
        ("INV-00000004", "491000000001", "0.05"),
        ("INV-00000005", "491000000002", "23.99"),     # 19.99 + 20% = 23.988 -> 23.99
        ("INV-00000006", "491000000003", "23.99"),
        ("INV-00000007", "491000000005", "23.18")]     # 19.99 x 29/30 = 19.3236... -> 19.32; x1.2 = 23.18(4)
    assert not list((tmp_path / "apr").glob("*.pdf"))


def test_pdf_is_valid_and_shows_total(period_run) -> None:  # type: ignore[no-untyped-def]
    from pypdf import PdfReader
    reader = PdfReader(period_run / "out" / "INV-00000002.pdf")
    text = "".join(page.extract_text() for page in reader.pages)
    assert "112.62" in text and "INV-00000002" in text and "SIM card replacement" in text


def test_html_renders_in_headless_chromium(period_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("chromium is not installed")
    html = period_run / "out" / "INV-00000002.html"
    assert 'id="total">112.62<' in html.read_text()
    shot = tmp_path / "inv.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,800",
         f"--screenshot={shot}", html.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@given(st.integers(-(10**12), 10**12), st.sampled_from(["EUR", "JPY", "KWD"]))
def test_round_minor_is_half_even(micro: int, currency: str) -> None:
    digits = {"EUR": 2, "JPY": 0, "KWD": 3}[currency]
    step = 10 ** (6 - digits)
    got = round_minor(micro, currency)
    assert got % step == 0 and abs(got - micro) * 2 <= step
    if abs(got - micro) * 2 == step:                 # a tie went to the even neighbour
        assert (got // step) % 2 == 0
    assert round_minor(Fraction(micro), currency) == got


@pytest.mark.parametrize("argv,msg", [
    (["--period", "2024-13"], "period must be YYYY-MM"),
    (["--period", "2024-03", "--formats", "json,xls"], "unknown document format"),
    (["--period", "2024-03", "--cdrs", "/nonexistent/cdrs"], "no such file"),
    (["--period", "2024-03", "--jobs", "0"], "--jobs must be at least 1"),
])
def test_cli_errors(period_run, tmp_path, capsys, argv, msg) -> None:  # type: ignore[no-untyped-def]
    base = {"--cdrs": str(period_run / "cdr"), "--out": str(tmp_path / "o"),
            "--data": str(period_run / "data")}
    args = ["invoice"]
    for k, v in base.items():
        if k not in argv:
            args += [k, v]
    assert main(args + argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_period_parse() -> None:
    p = Period.parse("2024-02")
    assert (p.days, p.end - p.start) == (29, 29 * 86400)
    assert Period.parse("2023-12").end == ts(2024, 1, 1, 0)


def test_ledger_facts_one_journal_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Adjustments in the period and the closing instant, per account, from interleaved entries."""
    from ocs.billing.invoice.run import _ledger_facts

    store = open_store(tmp_path / "d")
    for a in ("A", "B", "C"):
        at(store, ts(2024, 2, 1), lambda tx, a=a: ops.create_account(tx, None, account_id=a,
                                                                      currency="EUR", balance=0))
    at(store, ts(2024, 2, 20), lambda tx: ops.adjust(tx, None, "A", -1, "before the period"))
    at(store, ts(2024, 3, 2), lambda tx: ops.adjust(tx, None, "A", -2, "first"))
    at(store, ts(2024, 3, 3), lambda tx: ops.adjust(tx, None, "B", 7, "goodwill"))
    at(store, ts(2024, 3, 4), lambda tx: ops.topup(tx, None, "A", 100))  # a payment, not a line
    at(store, ts(2024, 3, 5), lambda tx: ops.adjust(tx, None, "A", -3, "second"))
    at(store, ts(2024, 3, 9), lambda tx: ops.set_status(tx, None, "B", "closed"))
    with store.read() as view:
        adjustments, closed = _ledger_facts(view, Period.parse("2024-03"))
    store.close()
    assert [(x.reason, x.delta) for x in adjustments["A"]] == [("first", -2), ("second", -3)]
    assert "A" not in closed
    assert [(x.reason, x.delta) for x in adjustments["B"]] == [("goodwill", 7)]
    assert closed["B"] == ts(2024, 3, 9)
    assert "C" not in adjustments and "C" not in closed
