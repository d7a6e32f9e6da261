"""Revenue assurance: a clean store passes; each injected mismatch is found and named; exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_invoice import at, build_fixture, usage

from balance import ops
from balance.records import Account
from balance.store import open_store
from ocs.billing import cdr as C
from ocs.billing.reconcile import reconcile
from ocs.cli import main

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("rec")
    build_fixture(root / "data", root / "cdr")
    return root


@pytest.fixture
def env(pristine, tmp_path):  # type: ignore[no-untyped-def]
    """A private copy of the fixture store and its exported files."""
    shutil.copytree(pristine / "data", tmp_path / "data")
    shutil.copytree(pristine / "cdr", tmp_path / "cdr")
    store = open_store(tmp_path / "data")
    yield store, tmp_path
    store.close()


def checks(report) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(d.check, d.subject) for d in report.discrepancies]


def test_clean_store_passes(env, capsys) -> None:  # type: ignore[no-untyped-def]
    store, root = env
    rep = reconcile(store, root / "cdr", now=NOW)
    assert rep.ok, rep.discrepancies
    assert rep.counts["cdrs"] == 12 and rep.counts["file_rows"] == 12 and rep.counts["accounts"] == 5
    assert main(["reconcile", "--data", str(store.path), "--cdrs", str(root / "cdr")]) == 0
    assert "OK: no discrepancy" in capsys.readouterr().out


def test_tampered_cdr_amount(env, capsys) -> None:  # type: ignore[no-untyped-def]
    store, root = env

    def fn(tx):  # type: ignore[no-untyped-def]
        c = C.unpack(tx.get("cdrs", C.key(3)))
        c.amount += 1
        tx.put("cdrs", C.key(3), C.pack(c))
        return c.session_id
    sid = store.execute(fn)
    rep = reconcile(store, root / "cdr", now=NOW)
    assert ("debits", f"session {sid} rating group 200") in checks(rep)
    assert ("files", "CDR 3") in checks(rep)
    assert len(rep.discrepancies) == 2
    assert main(["reconcile", "--data", str(store.path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and "0.050000" in out["discrepancies"][0]["detail"]


def test_debit_without_cdr(env) -> None:  # type: ignore[no-untyped-def]
    store, _ = env
    at(store, NOW - 100, lambda tx: ops.commit(
        tx, "lost", account_id="491000000002", session_id="lost-session", rating_group=100,
        used_units=60, price=lambda n: 30_000, unit="seconds"))
    rep = reconcile(store, now=NOW)
    assert checks(rep) == [("debits", "session lost-session rating group 100")]
    assert "no CDR" in rep.discrepancies[0].detail


def test_cdr_without_debit(env) -> None:  # type: ignore[no-untyped-def]
    store, _ = env
    store.execute(lambda tx: C.write(tx.txn, tx.dbs, C.CDR(
        0, "ghost", "491000000001", "491000000001", "default", 300, None, "events", 1, 50_000, "EUR",
        1, NOW, NOW, "EVENT", "h")))
    assert checks(reconcile(store, now=NOW)) == [("debits", "session ghost rating group 300")]


def test_balance_not_ledger_sum(env) -> None:  # type: ignore[no-untyped-def]
    store, _ = env

    def fn(tx):  # type: ignore[no-untyped-def]
        a = Account.unpack("491000000001", tx.get("accounts", b"491000000001"))
        a.balance += 1
        tx.put("accounts", b"491000000001", a.pack())
    store.execute(fn)
    rep = reconcile(store, now=NOW)
    assert checks(rep) == [("balances", "491000000001")]


def test_orphaned_reservation(env) -> None:  # type: ignore[no-untyped-def]
    store, _ = env

    def hold(sid: str, expires: int):  # type: ignore[no-untyped-def]
        return lambda tx: ops.reserve(
            tx, f"r-{sid}", account_id="491000000002", session_id=sid, rating_group=100,
            unit="seconds", units=60, price=lambda n: n * 1000, afford=lambda m: m // 1000,
            all_or_nothing=True, expires_at=expires)
    at(store, NOW - 50, hold("live", NOW + 600))        # not expired: fine
    at(store, NOW - 50, hold("stale", NOW - 10))        # expired, no open session: orphan
    rep = reconcile(store, now=NOW)
    assert checks(rep) == [("reservations", "reservation stale/100")]


def test_files_duplicate_and_missing(env) -> None:  # type: ignore[no-untyped-def]
    store, root = env
    shutil.copy(root / "cdr" / "part1.csv", root / "cdr" / "copy.csv")
    rep = reconcile(store, root / "cdr", now=NOW)
    assert len(rep.discrepancies) == 12 and all(d.detail == "exported 2 times" for d in rep.discrepancies)
    (root / "cdr" / "copy.csv").unlink()
    (root / "cdr" / "part1.csv").unlink()
    rep = reconcile(store, root / "cdr", now=NOW)
    assert checks(rep) == [("files", "12 CDRs")]


def test_pending_cdrs_are_not_missing(env) -> None:  # type: ignore[no-untyped-def]
    store, root = env
    usage(store, "491000000001", "default", 300, "events", 1, "0.05", NOW - 10)   # not exported yet
    assert reconcile(store, root / "cdr", now=NOW).ok


def test_cli_unknown_data_dir(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["reconcile", "--data", str(tmp_path / "none")]) == 2
    assert "no OCS data" in capsys.readouterr().err
