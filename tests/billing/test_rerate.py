"""`ocs rerate` and ocs/billing/cdr/columns.py over files written by the real CDR exporter formats."""

from __future__ import annotations

import json
import random
from importlib import resources

import numpy as np
import pytest

from ocs.billing.cdr import CDR, COLUMNS
from ocs.billing.cdr import columns as cdr_reader
from ocs.billing.cdr.files import write_rows
from ocs.billing.rerate import period_used, rerate
from ocs.cli import main
from rating import reference
from rating.rater import rater_for
from rating.tariff import load_tariff

EXAMPLE = str(resources.files("ocs") / "data" / "example-tariff.toml")
JAN = 1704067200   # 2024-01-01T00:00:00Z


def make_cdrs(n: int, seed: int = 1) -> list[list]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        plan = rnd.choice(["default", "postpaid", "legacy"])
        rg, unit = rnd.choice([(100, "seconds"), (200, "octets"), (300, "events"), (700, "events")])
        used = {"seconds": rnd.randint(0, 4000), "octets": rnd.randint(0, 3 << 30),
                "events": rnd.randint(1, 3)}[unit]
        bundle = rnd.choice([0, 0, 0, used // 2])
        start = JAN + rnd.randint(0, 70 * 86400)
        c = CDR(cdr_id=i + 1, session_id=f"s{i}", account_id=f"+3361234{rnd.randint(0, 30):04d}",
                subscription_id="x", plan=plan, rating_group=rg, service_identifier=None, unit=unit,
                used_units=used, amount=rnd.randint(0, 5_000_000), currency="EUR", tariff_version=1,
                start_time=start, end_time=start + 10, termination_cause="NORMAL", origin_host="pgw",
                bundle_units=bundle)
        rows.append([getattr(c, k) for k in COLUMNS])
    return rows


def write(path, fmt, rows):
    with open(path, "wb") as f:
        write_rows(f, fmt, [list(r) for r in rows])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_reader_paths_agree(tmp_path, fmt):
    rows = make_cdrs(300)
    write(tmp_path / f"c.{fmt}", fmt, rows)
    fast = cdr_reader.read(tmp_path / f"c.{fmt}")
    col = {k: [r[i] for r in rows] for i, k in enumerate(COLUMNS)}
    assert fast.used_units.tolist() == col["used_units"]
    assert fast.amount.tolist() == col["amount"]
    assert fast.start_time.tolist() == col["start_time"]
    assert fast.bundle_units.tolist() == col["bundle_units"]
    assert [fast.plan.names[c] for c in fast.plan.codes] == col["plan"]
    if fmt != "parquet":
        plain = cdr_reader.read(tmp_path / f"c.{fmt}", use_arrow=False)
        for k in ("used_units", "amount", "start_time", "rating_group", "bundle_units"):
            assert getattr(plain, k).tolist() == getattr(fast, k).tolist()
        assert [plain.account.names[c] for c in plain.account.codes] == col["account_id"]


def test_rerate_matches_reference_per_cdr(tmp_path):
    rows = make_cdrs(400, seed=7)
    write(tmp_path / "a.csv", "csv", rows[:200])
    write(tmp_path / "b.jsonl", "jsonl", rows[200:])
    cols = cdr_reader.read(tmp_path)             # a directory of two formats
    tariff = load_tariff(EXAMPLE)
    groups = rerate(cols, rater_for(tariff, 1))
    period = period_used(cols)
    want: dict[tuple[str, int], list[int]] = {}
    for i in range(len(cols)):
        plan, rg = cols.plan.names[cols.plan.codes[i]], int(cols.rating_group[i])
        rate = tariff.find(plan, rg)
        unit = cols.unit.names[cols.unit.codes[i]]
        g = want.setdefault((plan, rg), [0, 0, 0, 0])
        g[0] += 1
        g[1] += int(cols.amount[i])
        if rate is None or rate.unit != unit:
            g[3] += 1
            continue
        g[2] += reference.cost(tariff, rate, 0, int(cols.used_units[i] - cols.bundle_units[i]),
                               int(cols.start_time[i]), int(period[i]))
    got = {(g.plan, g.rating_group): [g.cdrs, g.revenue_before, g.revenue_after, g.unrated]
           for g in groups}
    assert got == want
    assert any(v[3] for v in want.values())      # "legacy" plan and rg 700 are unrated


def test_refunds_rerate_to_the_same_negative_amount(tmp_path):
    """One SMS sold and refunded, rerated with the tariff that charged it: delta 0 (the refund was
    counted as a second sale, +0.10 on 0.00)."""
    tariff = load_tariff(EXAMPLE)
    rate = tariff.find("default", 300)
    price = reference.cost(tariff, rate, 0, 1, JAN + 60, 0)
    rows = []
    for i, (amount, cause) in enumerate([(price, "EVENT"), (-price, "REFUND")]):
        c = CDR(cdr_id=i + 1, session_id=f"e{i}", account_id="+33612340001", subscription_id="x",
                plan="default", rating_group=300, service_identifier=None, unit="events",
                used_units=1, amount=amount, currency="EUR", tariff_version=1,
                start_time=JAN + 60 + i, end_time=JAN + 60 + i, termination_cause=cause,
                origin_host="smsc", bundle_units=0)
        rows.append([getattr(c, k) for k in COLUMNS])
    write(tmp_path / "c.csv", "csv", rows)
    (g,) = rerate(cdr_reader.read(tmp_path / "c.csv"), rater_for(tariff, 1))
    assert price > 0 and (g.revenue_before, g.revenue_after, g.delta) == (0, 0, 0)


def test_period_used_is_per_account_rg_month():
    rows = []
    for start, acc, units in [(JAN + 10, "a", 5), (JAN + 5, "a", 7), (JAN + 40 * 86400, "a", 1),
                              (JAN + 20, "b", 100), (JAN + 30, "a", 2)]:
        rows.append((acc, start, units))
    cols = cdr_reader.CdrColumns(
        account=cdr_reader.Codes(np.array([0 if r[0] == "a" else 1 for r in rows]), ["a", "b"]),
        plan=cdr_reader.Codes(np.zeros(5, np.int64), ["default"]),
        unit=cdr_reader.Codes(np.zeros(5, np.int64), ["seconds"]),
        currency=cdr_reader.Codes(np.zeros(5, np.int64), ["EUR"]),
        rating_group=np.full(5, 100), used_units=np.array([r[2] for r in rows]),
        bundle_units=np.zeros(5, np.int64), amount=np.zeros(5, np.int64),
        start_time=np.array([r[1] for r in rows]))
    assert period_used(cols).tolist() == [7, 0, 0, 0, 12]


def test_cli_table_json_and_errors(tmp_path, capsys):
    write(tmp_path / "c.csv", "csv", make_cdrs(50))
    assert main(["rerate", "--cdrs", str(tmp_path / "c.csv"), "--tariffs", EXAMPLE, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cdrs"] == 50 and sum(g["cdrs"] for g in out["groups"]) == 50
    assert all(set(g) >= {"plan", "rating_group", "units", "revenue_before", "revenue_after",
                          "delta", "delta_percent"} for g in out["groups"])
    assert main(["rerate", "--cdrs", str(tmp_path / "c.csv"), "--tariffs", EXAMPLE]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["plan", "rg", "cdrs"] and "total" in text
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\r\n" + ",".join(["1"] * len(COLUMNS)).replace(
        "1,1,1,1,1,1", "1,s,a,x,default,1", 1) + "\r\n")
    for argv in (["--cdrs", str(tmp_path / "none.csv"), "--tariffs", EXAMPLE],
                 ["--cdrs", str(bad), "--tariffs", EXAMPLE],
                 ["--cdrs", str(tmp_path / "c.csv"), "--tariffs", str(tmp_path / "c.csv")]):
        assert main(["rerate", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
