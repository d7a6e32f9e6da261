"""Bad input at the CLI's edges (issue #12): each is one line on stderr naming what is wrong, exit 2,
and nothing changed or created; and the CLI's hygiene: versions, a closed stdout, addresses in
use named, private file modes."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from balance.store import open_store
from ocs.cli import main
from ocs.config import ListenError, ServeConfig
from rating.tariff_store import TariffStore

EXAMPLE = str(resources.files("ocs") / "data" / "example-tariff.toml")  # plans default, postpaid
GOLD_ONLY = """
currency = "EUR"

[[plan]]
name = "gold"

[[rate]]
plan = "gold"
rating_group = "*"
unit = "seconds"
price = "0.01"
increment = 60
"""


def load_tariff(data: str | Path, text: str | None = None) -> None:
    store = open_store(data)
    try:
        TariffStore(store).load(text or Path(EXAMPLE).read_text(), "t.toml", effective_from=0)
    finally:
        store.close()


def run(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def refused(capsys, needle: str, *argv: str) -> str:  # type: ignore[no-untyped-def]
    rc, out, err = run(capsys, *argv)
    assert (rc, out) == (2, ""), err
    assert err.count("\n") == 1 and err.startswith("ocs: error: ") and needle in err, err
    return err


def snapshot(capsys, data: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """What an operator sees: every account (with its bundles) and every tariff version."""
    rc, accounts, _ = run(capsys, "account", "list", "--json", "--data", data)
    assert rc == 0
    shows = [run(capsys, "account", "show", a["id"], "--json", "--data", data)[1]
             for a in json.loads(accounts)]
    rc, tariffs, _ = run(capsys, "tariff", "list", "--json", "--data", data)
    assert rc == 0
    return accounts + "".join(shows), tariffs


@pytest.fixture
def data(tmp_path, capsys):  # type: ignore[no-untyped-def]
    """A store with the example tariff and one account 4917011 with a bundle."""
    path = str(tmp_path / "ocs-data")
    load_tariff(path)
    assert main(["account", "create", "4917011", "--balance", "5", "--data", path]) == 0
    assert main(["account", "bundle", "4917011", "--unit", "seconds", "--amount", "60",
                 "--data", path]) == 0
    capsys.readouterr()
    return path


# -- 1. a data dir that does not exist ------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["account", "list"], ["account", "show", "4917011"], ["account", "ledger", "4917011"],
    ["account", "topup", "4917011", "1"], ["account", "suspend", "4917011"],
    ["cdr", "stats"], ["cdr", "show", "--session", "s1"], ["cdr", "export", "--out", "OUT/x.csv"],
    ["reconcile"], ["invoice", "--cdrs", "OUT", "--period", "2026-01", "--out", "OUT/inv"],
    ["tariff", "list"], ["tariff", "show"],
])
def test_a_missing_data_dir_is_refused_and_not_created(capsys, tmp_path, argv) -> None:  # type: ignore[no-untyped-def]
    typo = tmp_path / "dta2"
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    refused(capsys, f"no OCS data at {typo}", *argv, "--data", str(typo))
    assert not typo.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["account", "create", "4917011", "--balance", "1"],
    ["account", "import", "ROWS"],
])
def test_provisioning_without_data_says_load_a_tariff_first(capsys, tmp_path, argv) -> None:  # type: ignore[no-untyped-def]
    rows = tmp_path / "rows.csv"
    rows.write_text("4917011,1\n")
    typo = tmp_path / "dta2"
    argv = [str(rows) if a == "ROWS" else a for a in argv]
    err = refused(capsys, f"no OCS data at {typo}", *argv, "--data", str(typo))
    assert "ocs tariff load" in err
    assert not typo.exists()


# -- 2. a server with nothing to charge -----------------------------------------------------------

def test_serve_warns_when_every_request_would_fail(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from server_harness import start_server
    srv = start_server(tmp_path / "dataa")
    try:
        assert srv.proc.poll() is None  # it starts: provisioning may follow
    finally:
        assert srv.stop() == 0
    log = srv.log()
    tariff = [line for line in log.splitlines() if "no tariff in force" in line]
    account = [line for line in log.splitlines() if "no account in" in line]
    assert len(tariff) == 1 and "WARNING" in tariff[0] and "5031 DIAMETER_RATING_FAILED" in tariff[0]
    assert len(account) == 1 and "WARNING" in account[0] and "5030 DIAMETER_USER_UNKNOWN" in account[0]


def test_serve_does_not_warn_about_a_provisioned_store(data) -> None:  # type: ignore[no-untyped-def]
    from ocs.cli.serve import warn_unusable
    assert warn_unusable(ServeConfig(data=data)) == []
    empty = Path(data).parent / "empty"
    open_store(empty).close()
    assert [w.split(":")[0] for w in warn_unusable(ServeConfig(data=str(empty)))] == [
        f"no tariff in force in {empty}", f"no account in {empty}"]


# -- 3. a plan no tariff has ----------------------------------------------------------------------

def test_create_with_an_unknown_plan_lists_the_plans(capsys, data) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(capsys, data)
    err = refused(capsys, "no loaded tariff has plan 'platinum'", "account", "create", "4917012",
                  "--balance", "1", "--plan", "platinum", "--data", data)
    assert "(plans: default, postpaid)" in err
    assert snapshot(capsys, data) == before


def test_import_row_with_an_unknown_plan_is_refused(capsys, data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = tmp_path / "rows.csv"
    rows.write_text("4917012,1,EUR,postpaid\n4917013,1,EUR,platinum\n")
    before = snapshot(capsys, data)
    err = refused(capsys, f"{rows}:2: no loaded tariff has plan 'platinum'", "account", "import",
                  str(rows), "--data", data)
    assert "(plans: default, postpaid)" in err
    assert snapshot(capsys, data) == before


def test_the_implicit_default_plan_needs_a_tariff_with_it(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = str(tmp_path / "gold")
    load_tariff(data, GOLD_ONLY)
    rows = tmp_path / "rows.csv"
    rows.write_text("4917012,1\n")
    before = snapshot(capsys, data)
    refused(capsys, "no loaded tariff has plan 'default' (plans: gold)",
            "account", "create", "4917011", "--balance", "1", "--data", data)
    refused(capsys, f"{rows}:1: no loaded tariff has plan 'default' (plans: gold)",
            "account", "import", str(rows), "--data", data)
    assert snapshot(capsys, data) == before
    assert run(capsys, "account", "create", "4917011", "--balance", "1", "--plan", "gold",
               "--data", data)[0] == 0


def test_provisioning_without_a_tariff_says_load_one(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = str(tmp_path / "bare")
    open_store(data).close()  # a store (e.g. made by `ocs serve`) with no tariff in it
    rows = tmp_path / "rows.csv"
    rows.write_text("4917012,1\n")
    before = snapshot(capsys, data)
    needle = "no tariff loaded; load one first with `ocs tariff load`"
    refused(capsys, needle, "account", "create", "4917011", "--balance", "1", "--data", data)
    refused(capsys, needle, "account", "import", str(rows), "--data", data)
    assert snapshot(capsys, data) == before


# -- 4. a negative opening balance ---------------------------------------------------------------

def test_a_negative_opening_balance_is_refused(capsys, data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = tmp_path / "rows.csv"
    rows.write_text("4917012,1\n4917013,-5\n")
    before = snapshot(capsys, data)
    err = refused(capsys, "bad balance '-3': an opening balance must not be negative",
                  "account", "create", "4917012", "--balance", "-3", "--data", data)
    assert "credit limit" in err
    err = refused(capsys, f"{rows}:2: bad balance '-5'", "account", "import", str(rows),
                  "--data", data)
    assert "credit limit" in err
    assert snapshot(capsys, data) == before


# -- 5. an account id that is not E.164 ----------------------------------------------------------

@pytest.mark.parametrize("ident", ["abc", "+4917012", "1" * 16, "49 170", "４９１７"])
def test_a_non_e164_id_is_refused_unless_any_is_asked(capsys, data, tmp_path, ident) -> None:  # type: ignore[no-untyped-def]
    rows = tmp_path / "rows.csv"
    rows.write_text(f"4917012,1\n{ident},1\n")
    before = snapshot(capsys, data)
    err = refused(capsys, f"bad account id {ident!r}", "account", "create", ident, "--balance", "1",
                  "--data", data)
    assert "1-15 digits" in err and "--id-format any" in err
    refused(capsys, f"{rows}:2: bad account id {ident!r}", "account", "import", str(rows),
            "--data", data)
    assert snapshot(capsys, data) == before
    assert run(capsys, "account", "import", str(rows), "--id-format", "any", "--data", data)[0] == 0
    assert run(capsys, "account", "show", ident, "--data", data)[0] == 0


# -- 6. a bundle that has already expired --------------------------------------------------------

def test_a_bundle_expiring_in_the_past_is_refused(capsys, data) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(capsys, data)
    refused(capsys, "bad --expires '2020-01-01T00:00:00Z': already past", "account", "bundle",
            "4917011", "--unit", "octets", "--amount", "1000", "--expires", "2020-01-01T00:00:00Z",
            "--data", data)
    assert snapshot(capsys, data) == before


# -- B. hygiene ----------------------------------------------------------------------------------

def ocs_proc(*argv: str, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "ocs", *argv], capture_output=True, text=True,
                          timeout=120, **kw)


def test_version_flag_and_command() -> None:
    from importlib.metadata import version
    p = ocs_proc("--version")
    assert (p.returncode, p.stdout) == (0, f"ocs {version('ocs')}\n")
    p = ocs_proc("version", "--json")
    assert p.returncode == 0, p.stderr
    import lmdb
    import numpy
    doc = json.loads(p.stdout)
    assert doc["ocs"] == version("ocs") and doc["numpy"] == numpy.__version__
    assert doc["lmdb"] == ".".join(map(str, lmdb.version())) and doc["py-lmdb"] == lmdb.__version__
    assert doc["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(doc) == {"ocs", "python", "lmdb", "py-lmdb", "numba", "uvloop", "numpy", "msgpack"}
    assert all(doc.values())
    p = ocs_proc("version")
    assert p.returncode == 0 and p.stdout.splitlines()[0].split() == ["ocs", version("ocs")]


def test_a_closed_stdout_ends_quietly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = str(tmp_path / "d")
    load_tariff(data)
    rows = tmp_path / "rows.csv"
    rows.write_text("".join(f"49{i:08d},1\n" for i in range(5000)))   # ~500 KB listed > a pipe
    assert ocs_proc("account", "import", str(rows), "--data", data).returncode == 0
    # `ocs account list | head -1`: the reader takes one line, then goes away mid-output
    proc = subprocess.Popen([sys.executable, "-m", "ocs", "account", "list", "--data", data],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 0 and err == b"", err
    assert first.startswith(b"4900000000 ")
    # `ocs cdr stats | head -0`: the reader is gone before anything is written
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.run([sys.executable, "-m", "ocs", "cdr", "stats", "--data", data],
                           stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    assert p.returncode == 0 and p.stderr == b"", p.stderr


@pytest.fixture
def busy_port():  # type: ignore[no-untyped-def]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.parametrize("flag, what", [("--listen", "diameter"), ("--metrics", "metrics")])
def test_an_address_in_use_is_named(tmp_path, busy_port, flag, what) -> None:  # type: ignore[no-untyped-def]
    argv = ["--listen", "127.0.0.1:0"] if flag == "--metrics" else []
    p = ocs_proc("serve", "--data", str(tmp_path / "d"), *argv, flag, f"127.0.0.1:{busy_port}")
    assert p.returncode == 2
    assert p.stderr == (f"ocs: error: cannot listen on 127.0.0.1:{busy_port} ({what}): "
                        "address already in use\n")
    assert not (tmp_path / "d").exists()  # refused before the store or the engine started


def test_metrics_in_use_is_named_where_it_is_bound(busy_port) -> None:  # type: ignore[no-untyped-def]
    """The bind itself (a port taken between the check and the start) names the address too."""
    from ocs.metrics import serve_metrics
    with pytest.raises(ListenError) as info:
        serve_metrics("127.0.0.1", busy_port)
    assert str(info.value) == f"cannot listen on 127.0.0.1:{busy_port} (metrics): address already in use"


@pytest.mark.parametrize("flag", ["--listen", "--metrics"])
def test_an_address_without_a_host_is_refused(tmp_path, flag) -> None:  # type: ignore[no-untyped-def]
    p = ocs_proc("serve", "--data", str(tmp_path / "d"), flag, ":3868")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "has no host: say 0.0.0.0:3868 or [::]:3868 explicitly" in p.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("group, dir_mode, file_mode", [
    (False, 0o700, 0o600), (True, 0o750, 0o640)])
def test_files_are_private_whatever_the_umask(tmp_path, group, dir_mode, file_mode) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "d"
    flag = ["--group-readable"] if group else []
    p = ocs_proc(*flag, "tariff", "load", EXAMPLE, "--data", str(data),
                 preexec_fn=lambda: os.umask(0o022))
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(data.stat().st_mode) == dir_mode
    assert stat.S_IMODE((data / "data.mdb").stat().st_mode) == file_mode
