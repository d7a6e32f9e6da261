"""`ocs bench` against a live server: repeated runs never reuse Session-Ids, and the operator's
data dir is written only with --provision (real server, real CLI; no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import start_server

from balance.store import open_store
from bench.provision import DEFAULT_TARIFF
from rating.tariff_store import TariffStore

ACCOUNTS = 40


def bench(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocs", "bench", "--no-progress", *argv],
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def tariff_versions(data: Path) -> list[dict]:
    store = open_store(data, readonly=True)
    try:
        return TariffStore(store).list()
    finally:
        store.close()


def session_ids(data: Path) -> list[str]:
    store = open_store(data, readonly=True)
    try:
        with store.read() as view:
            cur = view.txn.cursor(db=store.db("sessions"))
            return [k.decode() for k in cur.iternext(keys=True, values=False)]
    finally:
        store.close()


@pytest.fixture
def live(tmp_path):
    """A real server over a data dir with nothing in it yet (no tariff, no accounts)."""
    srv = start_server(tmp_path / "data")
    yield srv
    assert srv.stop() == 0, srv.log()


def test_three_runs_against_one_live_server_reuse_no_session_id(live, tmp_path):
    data = live.data
    load = ["--host", live.host, "--port", str(live.port), "--data", str(data),
            "--duration", "2", "--warmup", "0", "--accounts", str(ACCOUNTS), "--connections", "4",
            "--balance", "100000", "--chart", str(tmp_path / "r.png")]

    # without --provision the bench refuses, naming what is missing, and writes nothing
    proc = bench(*load, "--json", str(tmp_path / "r0.json"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert f"{ACCOUNTS} of the {ACCOUNTS} bench accounts 491700000000..4917000000{ACCOUNTS - 1}" \
        in line and "a tariff" in line and "--provision" in line
    assert tariff_versions(data) == [] and not (tmp_path / "r0.json").exists()

    # --provision writes the bench tariff and accounts into the live server's data dir
    proc = bench(*load, "--provision", "--json", str(tmp_path / "p.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    provisioned = tariff_versions(data)
    assert [v["source"] for v in provisioned] == [str(DEFAULT_TARIFF)]
    run_ids = [json.loads((tmp_path / "p.json").read_text())["runs"][0]["run_id"]]

    for i in range(3):
        out = tmp_path / f"r{i + 1}.json"
        proc = bench(*load, "--json", str(out), cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        [run] = json.loads(out.read_text())["runs"]
        codes = run["result_codes"]
        assert run["answered"] > 0 and "5002" not in codes and "5012" not in codes, codes
        assert codes == {"2001": run["answered"]} and run["errors"] == 0
        assert run["conservation"]["ok"], run["conservation"]
        run_ids.append(run["run_id"])
        assert tariff_versions(data) == provisioned    # no run without --provision wrote one

    assert len(set(run_ids)) == 4
    # every Session-Id the server keeps carries the run id of the run that made it
    ids = session_ids(data)
    by_run = {r: sum(s.endswith(f";{r}") for s in ids) for r in run_ids}
    assert sum(by_run.values()) == len(ids) and all(by_run.values()), by_run


def test_missing_data_dir_is_refused_and_not_created(tmp_path):
    absent = tmp_path / "nothing-here"
    proc = bench("--data", str(absent), "--duration", "1", "--warmup", "0", cwd=tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"ocs: error: --data {absent} lacks OCS data") and "--provision" in line
    assert not absent.exists()
    proc = bench("--host", "127.0.0.1", "--port", "9", "--provision", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("ocs: error: --provision writes into --data DIR; give the data "
                                   "dir to provision (that of the --host server)")
    assert list(tmp_path.iterdir()) == []


def test_another_tariff_in_force_is_named(live, tmp_path):
    """Accounts there, but the operator's tariff in force: conservation would be priced wrong."""
    first = bench("--host", live.host, "--port", str(live.port), "--data", str(live.data),
                  "--provision", "--duration", "1", "--warmup", "0", "--accounts", "5",
                  "--connections", "1", "--json", str(tmp_path / "p.json"),
                  "--chart", str(tmp_path / "p.png"), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    other = tmp_path / "other.toml"
    other.write_text(DEFAULT_TARIFF.read_text().replace('price = "0.05"\nincrement = 1',
                                                        'price = "0.07"\nincrement = 1'))
    assert other.read_text() != DEFAULT_TARIFF.read_text()
    store = open_store(live.data)
    try:
        TariffStore(store).load(other.read_text(), str(other))
    finally:
        store.close()
    before = tariff_versions(live.data)
    proc = bench("--host", live.host, "--port", str(live.port), "--data", str(live.data),
                 "--duration", "1", "--warmup", "0", "--accounts", "5", cwd=tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert f"the bench tariff {DEFAULT_TARIFF} in force (in force: version 2 from {other})" in line
    assert "bench accounts" not in line and tariff_versions(live.data) == before
