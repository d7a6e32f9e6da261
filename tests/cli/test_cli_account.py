"""`ocs account ...` against tmp_path data dirs: happy paths, JSON shape, every user error is one
line on stderr with exit 2 and changes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from balance import ops
from balance.store import open_store
from balance.writer import GroupCommitWriter
from ocs.cli import main
from rating.tariff_store import TariffStore

EXAMPLE = str(resources.files("ocs") / "data" / "example-tariff.toml")  # plans default, postpaid


def load_tariff(data: str | Path) -> None:
    """Provisioning needs a tariff with the account's plan: load the example, in force since 1970."""
    store = open_store(data)
    try:
        TariffStore(store).load(Path(EXAMPLE).read_text(), "example-tariff.toml", effective_from=0)
    finally:
        store.close()


@pytest.fixture
def data(tmp_path):
    path = str(tmp_path / "ocs-data")
    load_tariff(path)
    return path


def ocs(capsys, data, *argv):
    rc = main(["account", *argv, "--data", data])
    out, err = capsys.readouterr()
    return rc, out, err


def show(capsys, data, ident="4917011"):
    rc, out, _ = ocs(capsys, data, "show", ident, "--json")
    assert rc == 0
    return json.loads(out)


def test_create_topup_bundle_show_json(capsys, data):
    assert ocs(capsys, data, "create", "4917011", "--balance", "10.5", "--imsi", "262011",
               "--credit-limit", "5", "--plan", "postpaid")[0] == 0
    assert ocs(capsys, data, "topup", "262011", "2.25")[0] == 0  # by alias
    assert ocs(capsys, data, "adjust", "4917011", "-0.75", "--reason", "goodwill reversal")[0] == 0
    assert ocs(capsys, data, "bundle", "4917011", "--unit", "seconds", "--amount", "600",
               "--rating-group", "10", "20", "--expires", "2031-01-01T00:00:00Z",
               "--priority", "2")[0] == 0
    assert ocs(capsys, data, "bundle", "4917011", "--unit", "money", "--amount", "1.5")[0] == 0
    doc = show(capsys, data)
    assert {k: doc[k] for k in ("id", "currency", "balance", "reserved", "available", "plan",
                                "status")} == {
        "id": "4917011", "currency": "EUR", "balance": "12.000000", "reserved": "0.000000",
        "available": "17.000000", "plan": "postpaid", "status": "active"}
    assert doc["bundles"][0] | {"id": None} == {
        "id": None, "unit": "seconds", "remaining": 600, "reserved": 0, "rating_groups": [10, 20],
        "priority": 2, "valid_from": None, "expires": "2031-01-01T00:00:00Z"}
    assert doc["bundles"][1]["remaining"] == "1.500000"
    rc, out, _ = ocs(capsys, data, "ledger", "4917011", "--json")
    assert rc == 0
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["create", "topup", "adjust", "bundle", "bundle"]
    assert rows[-1]["balance"] == "12.000000"
    rc, out, _ = ocs(capsys, data, "list", "--json")
    assert rc == 0
    assert [a["id"] for a in json.loads(out)] == ["4917011"]


def test_status_commands(capsys, data):
    ocs(capsys, data, "create", "4917011", "--balance", "1")
    assert ocs(capsys, data, "suspend", "4917011")[0] == 0
    assert show(capsys, data)["status"] == "suspended"
    assert ocs(capsys, data, "activate", "4917011")[0] == 0
    assert ocs(capsys, data, "close", "4917011")[0] == 0
    rc, _, err = ocs(capsys, data, "activate", "4917011")
    assert rc == 2 and err.count("\n") == 1 and "closed" in err


def test_idempotency_key_makes_topup_retry_safe(capsys, data):
    ocs(capsys, data, "create", "4917011", "--balance", "1")
    for _ in range(3):
        assert ocs(capsys, data, "topup", "4917011", "5", "--idempotency-key", "pay-77")[0] == 0
    assert show(capsys, data)["balance"] == "6.000000"


@pytest.mark.parametrize("argv, needle", [
    (["topup", "4917011", "1.0000001"], "6 decimals"),
    (["topup", "4917011", "abc"], "not a decimal"),
    (["topup", "4917011", "-1"], "positive"),
    (["topup", "4999", "1"], "unknown account"),
    (["topup", "4917011", "1", "--currency", "USD"], "EUR"),
    (["create", "4917011", "--balance", "1"], "already exists"),
    (["create", "4917012", "--balance", "1", "--imsi", "262011"], "already exists"),
    (["create", "4917012", "--balance", "1", "--currency", "EURO"], "EURO"),
    (["create", "4917012", "--balance", "1", "--credit-limit", "-3"], "negative"),
    (["adjust", "4917011", "0", "--reason", "x"], "zero"),
    (["bundle", "4917011", "--unit", "seconds", "--amount", "1.5"], "whole number"),
    (["bundle", "4917011", "--unit", "seconds", "--amount", "5", "--expires", "soon"], "ISO 8601"),
    (["bundle", "4917011", "--unit", "seconds", "--amount", "5", "--expires",
      "9999-12-31T23:59:59-05:00"], "between 1970 and 9999"),
    (["bundle", "4917011", "--unit", "octets", "--amount", "99999999999999999999999"], "at most"),
    (["bundle", "4917011", "--unit", "octets", "--amount", "5", "--priority", "9" * 23], "priority"),
    (["topup", "4917011", "1e30"], "not a decimal"),
    (["topup", "4917011", "1_000"], "not a decimal"),
    (["show", "nobody"], "unknown account"),
    (["ledger", "nobody"], "unknown account"),
])
def test_user_errors_are_one_line_exit_2_and_change_nothing(capsys, data, argv, needle):
    ocs(capsys, data, "create", "4917011", "--balance", "1", "--imsi", "262011")
    before = show(capsys, data)
    rc, out, err = ocs(capsys, data, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ocs: error: ") and needle in err
    assert show(capsys, data) == before
    rc, out, _ = ocs(capsys, data, "list", "--json")
    assert len(json.loads(out)) == 1


def test_import_bulk_and_bad_rows(capsys, data, tmp_path):
    good = tmp_path / "good.csv"
    lines = ["id,balance,currency,plan,imsi,credit_limit"]
    lines += [f"49{i:08d},{i}.5,EUR,postpaid,2620{i:08d},{i % 3}" for i in range(2500)]
    good.write_text("\n".join(lines) + "\n")
    rc, out, _ = ocs(capsys, data, "import", str(good))
    assert rc == 0 and "imported 2500" in out
    doc = show(capsys, data, "262000001234")
    assert (doc["id"], doc["balance"], doc["available"]) == ("4900001234", "1234.500000", "1235.500000")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,balance\n4800000001,1\n4800000002,1.2.3\n")
    rc, _, err = ocs(capsys, data, "import", str(bad))
    assert rc == 2 and err.count("\n") == 1 and f"{bad}:3" in err
    dup = tmp_path / "dup.csv"
    dup.write_text("4800000001,1\n4900000007,1\n")
    rc, _, err = ocs(capsys, data, "import", str(dup))
    assert rc == 2 and f"{dup}:2" in err
    rc, out, _ = ocs(capsys, data, "list", "--json")
    assert len(json.loads(out)) == 2500  # nothing of the bad files imported


def test_import_killed_midway_resumes(tmp_path):
    """kill -9 during a large import, then the same file again (by another path spelling): every
    row exactly once. The rerun used to refuse the rows the first run had created."""
    import signal
    import time
    data = tmp_path / "d"
    load_tariff(data)
    csv_file = tmp_path / "big.csv"
    csv_file.write_text("".join(f"47{i:08d},1\n" for i in range(40_000)))

    def import_cmd(path: str) -> list[str]:
        return [sys.executable, "-m", "ocs", "account", "import", path, "--data", str(data)]

    proc = subprocess.Popen(import_cmd(str(csv_file)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (data / "data.mdb").exists():
                store = open_store(data)
                try:
                    with store.read() as view:
                        started = view.find_account("4700000000") is not None
                finally:
                    store.close()
                if started:
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    store = open_store(data)
    try:
        with store.read() as view:
            before = sum(1 for _ in view.accounts())
    finally:
        store.close()
    assert before > 0
    r = subprocess.run(import_cmd(f"{tmp_path}/./big.csv"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    store = open_store(data)
    try:
        with store.read() as view:
            accounts = list(view.accounts())
    finally:
        store.close()
    assert len(accounts) == 40_000 and all(a.balance == 1_000_000 for a in accounts)


def test_subprocess_cli_writes_are_seen_by_a_running_writer(tmp_path):
    """The CLI in another process tops up while this process runs the group-commit writer."""
    data = str(tmp_path / "live")
    load_tariff(data)

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "ocs", "account", *argv, "--data", data],
                              capture_output=True, text=True, timeout=60)

    assert cli("create", "4917011", "--balance", "1").returncode == 0

    async def scenario() -> int:
        store = open_store(data)
        writer = GroupCommitWriter(store)
        writer.start()
        try:
            await writer.submit(lambda tx: ops.topup(tx, "srv-1", "4917011", 1_000_000))
            r = await asyncio.to_thread(cli, "topup", "4917011", "3")
            assert r.returncode == 0, r.stderr
            bad = await asyncio.to_thread(cli, "topup", "4917011", "x")
            assert bad.returncode == 2 and bad.stderr.count("\n") == 1
            return await writer.submit(lambda tx: ops.topup(tx, "srv-2", "4917011", 1_000_000))
        finally:
            await writer.stop()
            store.close()

    assert asyncio.run(scenario()) == 6_000_000


def test_account_currency_must_be_the_tariffs(capsys, data, tmp_path):
    # the fixture's tariff is EUR
    rc, _, err = ocs(capsys, data, "create", "4917099", "--balance", "1", "--currency", "JPY")
    assert rc == 2 and err.count("\n") == 1 and "not the tariff's (EUR)" in err
    rows = tmp_path / "jpy.csv"
    rows.write_text("4917098,1,EUR\n4917097,1,JPY\n")
    rc, _, err = ocs(capsys, data, "import", str(rows))
    assert rc == 2 and f"{rows}:2" in err
    rc, out, _ = ocs(capsys, data, "list", "--json")
    assert json.loads(out) == []                                            # nothing created
