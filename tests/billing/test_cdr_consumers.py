"""Named CDR consumers against the real server: `ocs cdr export --consumer` while it runs, exactly once
per consumer (also across kill -9 mid-export), the server's own file export beside them, and
`ocs cdr consumers` (positions, lag, --drop)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from server_harness import provision, start_server

from ocs.billing.export import read_all
from ocs.billing.export.exporter import PAUSE_ENV
from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import CCR, MSCCRequest, Units

ACCOUNT = "491700000001"
_ids = itertools.count(1)


def event(n: int = 1) -> CCR:
    return CCR(session_id=f"pgw.test;{next(_ids)};ev", destination_realm="test", auth_application_id=4,
               service_context_id="32251@3gpp.org", request_type=4, request_number=0,
               subscription_ids=[(C.SubscriptionIdType.END_USER_E164, ACCOUNT)],
               mscc=[MSCCRequest(rating_group=300, requested=Units(service_specific_units=n))])


def traffic(srv, count: int) -> None:  # type: ignore[no-untyped-def]
    """`count` debited events, each answered only after its CDR is durable."""
    async def go() -> None:
        c = await DiameterClient.connect(srv.host, srv.port)
        try:
            answers = await asyncio.gather(*(c.ccr(event()) for _ in range(count)))
        finally:
            await c.close()
        assert all(a.result_code == 2001 for a in answers)
    asyncio.run(go())


def ocs(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocs", *args, "--data", str(data)],
                          capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})


def export(data: Path, out: Path, consumer: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    argv = ["cdr", "export", "--out", str(out), *extra]
    if consumer is not None:
        argv += ["--consumer", consumer]
    return ocs(data, *argv)


def consumers(data: Path) -> dict:  # type: ignore[type-arg]
    proc = ocs(data, "cdr", "consumers", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ids(*roots: Path) -> Counter[int]:
    got: Counter[int] = Counter()
    for root in roots:
        got.update(c.cdr_id for _, c in read_all(root))
    return got


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("ocs: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("consumers") / "data"
    provision(data, {ACCOUNT: {"balance": "100000"}})
    srv = start_server(data)
    yield srv
    assert srv.stop() == 0, srv.log()


def test_export_twice_gives_each_cdr_once(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = server.data
    traffic(server, 30)
    last = consumers(data)["last_cdr_id"]
    p = export(data, tmp_path / "a.csv", "billing")
    assert p.returncode == 0, p.stderr
    assert f"for consumer billing to {tmp_path / 'a.csv'}" in p.stdout
    assert ids(tmp_path / "a.csv") == Counter(range(1, last + 1))
    again = export(data, tmp_path / "b.csv", "billing")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "nothing to export for consumer billing"
    assert not (tmp_path / "b.csv").exists()
    # a second consumer gets every CDR too, on its own schedule, in its own format
    p = export(data, tmp_path / "w.jsonl", "warehouse")
    assert p.returncode == 0, p.stderr
    assert ids(tmp_path / "w.jsonl") == Counter(range(1, last + 1))
    # more traffic: each consumer gets only the new CDRs
    traffic(server, 12)
    for name, out in (("billing", tmp_path / "c.csv"), ("warehouse", tmp_path / "x.parquet")):
        p = export(data, out, name)
        assert p.returncode == 0, p.stderr
        assert ids(out) == Counter(range(last + 1, last + 13))
    state = {c["name"]: c for c in consumers(data)["consumers"]}
    assert state["billing"]["position"] == state["warehouse"]["position"] == last + 12
    assert "server-files" in state          # the server's own export, listed like the others


def test_consumers_concurrently_with_traffic(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two consumers exporting in a loop while traffic flows: each gets every CDR exactly once."""
    data = server.data
    dirs = {name: tmp_path / name for name in ("fraud", "dwh")}
    for d in dirs.values():
        d.mkdir()
    runs: list[tuple[str, subprocess.Popen]] = []
    for rnd in range(3):
        for name, d in dirs.items():
            runs.append((name, subprocess.Popen(
                [sys.executable, "-m", "ocs", "cdr", "export", "--consumer", name, "--out",
                 str(d / f"run{rnd}.csv"), "--data", str(data)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        traffic(server, 20)
        for _name, proc in runs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        runs.clear()
    for name, d in dirs.items():
        assert export(data, d / "final.csv", name).returncode == 0
    last = consumers(data)["last_cdr_id"]
    for d in dirs.values():
        assert ids(d) == Counter(range(1, last + 1))


@pytest.mark.parametrize("point", ["after-temp", "after-rename"])
@pytest.mark.parametrize("same_out", [False, True])
def test_kill_9_mid_export_then_rerun(server, tmp_path, point: str, same_out: bool) -> None:  # type: ignore[no-untyped-def]
    data = server.data
    name = f"crash-{point}-{int(same_out)}"
    traffic(server, 10)
    first = tmp_path / "first.csv"
    proc = subprocess.Popen([sys.executable, "-m", "ocs", "cdr", "export", "--consumer", name,
                             "--out", str(first), "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, PAUSE_ENV: point})
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == f"export paused {point}"
        # while it is paused: the same consumer is refused, another consumer runs
        err = one_line_error(export(data, tmp_path / "dup.csv", name))
        assert f"another export for consumer {name} is running (pid {proc.pid}" in err
        assert not (tmp_path / "dup.csv").exists()
        one_line_error(ocs(data, "cdr", "consumers", "--drop", name))
        assert export(data, tmp_path / "other.csv", f"other-{name}").returncode == 0
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert first.exists() == (point == "after-rename")
    state = {c["name"]: c for c in consumers(data)["consumers"]}
    assert state[name]["position"] == 0 and state[name]["unfinished_export"] == str(first)
    traffic(server, 5)                  # new CDRs arrive before the rerun
    second = first if same_out else tmp_path / "second.csv"
    p = export(data, second, name)
    assert p.returncode == 0, p.stderr
    assert f"finished an interrupted export for consumer {name}" in p.stdout
    if same_out:    # the rerun recognised its file; the new CDRs wait for the next run
        p = export(data, tmp_path / "third.csv", name)
        assert p.returncode == 0 and "exported 5 CDRs" in p.stdout, p.stdout + p.stderr
    last = consumers(data)["last_cdr_id"]
    files = [f for f in tmp_path.iterdir() if f.name in ("first.csv", "second.csv", "third.csv")]
    assert ids(*files) == Counter(range(1, last + 1))
    assert not list(tmp_path.glob(".*.part"))
    state = {c["name"]: c for c in consumers(data)["consumers"]}
    assert state[name]["position"] == last and state[name]["unfinished_export"] is None


def test_consumers_positions_lag_and_drop(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = server.data
    traffic(server, 4)
    assert export(data, tmp_path / "a.csv", "lister").returncode == 0
    pos = consumers(data)["last_cdr_id"]
    traffic(server, 7)
    listing = consumers(data)
    assert listing["last_cdr_id"] == pos + 7
    me = next(c for c in listing["consumers"] if c["name"] == "lister")
    assert (me["position"], me["lag"], me["files"]) == (pos, 7, 1) and me["last_ran"]
    text = ocs(data, "cdr", "consumers")
    assert text.returncode == 0
    row = next(line for line in text.stdout.splitlines() if line.startswith("lister "))
    assert row.split()[1:4] == [str(pos), "7", "1"]
    # dropped: gone from the list; an export under that name starts from the oldest CDR kept (1)
    p = ocs(data, "cdr", "consumers", "--drop", "lister")
    assert p.returncode == 0 and "dropped consumer lister" in p.stdout
    assert "lister" not in [c["name"] for c in consumers(data)["consumers"]]
    assert "no consumer named 'lister'" in one_line_error(ocs(data, "cdr", "consumers", "--drop", "lister"))
    assert export(data, tmp_path / "again.csv", "lister").returncode == 0
    assert ids(tmp_path / "again.csv") == Counter(range(1, pos + 8))
    # the server's exporter holds its lock: its checkpoint cannot be dropped under it
    assert "server's file export is running" in one_line_error(
        ocs(data, "cdr", "consumers", "--drop", "server-files"))


def test_empty_export_and_allow_empty(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = server.data
    traffic(server, 1)
    assert export(data, tmp_path / "all.csv", "empty-test").returncode == 0
    p = export(data, tmp_path / "none.csv", "empty-test")
    assert (p.returncode, p.stdout.strip()) == (0, "nothing to export for consumer empty-test")
    assert not (tmp_path / "none.csv").exists()
    p = export(data, tmp_path / "header.csv", "empty-test", "--allow-empty")
    assert p.returncode == 0 and "with no rows" in p.stdout
    header = (tmp_path / "header.csv").read_text().splitlines()
    assert header == (tmp_path / "all.csv").read_text().splitlines()[:1]
    assert ids(tmp_path / "header.csv") == Counter()


@pytest.mark.parametrize("argv, says", [
    (["--consumer", "bad/name"], "bad consumer name"),
    (["--consumer", "server-files"], "server's own file export"),
])
def test_export_refusals(server, tmp_path, argv: list[str], says: str) -> None:  # type: ignore[no-untyped-def]
    p = ocs(server.data, "cdr", "export", "--out", str(tmp_path / "x.csv"), *argv)
    assert says in one_line_error(p)
    assert not (tmp_path / "x.csv").exists()


def test_server_file_export_beside_consumers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The server's DATA/cdr files (sealed each second here) still hold every CDR exactly once while
    consumers export beside it, and reconcile passes on them and on a consumer's directory."""
    data = tmp_path / "data"
    provision(data, {ACCOUNT: {"balance": "100000"}})
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("cdr_rotate_seconds = 1\n")
    srv = start_server(data, "--config", str(cfg))
    billing = tmp_path / "billing"
    billing.mkdir()
    try:
        for rnd in range(3):
            traffic(srv, 15)
            assert export(data, billing / f"b{rnd}.csv", "billing").returncode == 0
        listing = consumers(data)
        assert listing["last_cdr_id"] == 45
        assert {c["name"] for c in listing["consumers"]} >= {"server-files", "billing"}
    finally:
        assert srv.stop() == 0, srv.log()
    assert ids(data / "cdr") == Counter(range(1, 46)) == ids(billing)
    state = {c["name"]: c for c in consumers(data)["consumers"]}
    assert state["server-files"]["position"] == 45 and state["server-files"]["lag"] == 0
    for root in (data / "cdr", billing):
        p = ocs(data, "reconcile", "--cdrs", str(root))
        assert p.returncode == 0 and "OK: no discrepancy" in p.stdout, p.stdout + p.stderr
    # both consumers' files in one directory would bill twice: reconcile says so
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in [*(data / "cdr").iterdir(), *billing.iterdir()]:
        (mixed / f.name).write_bytes(f.read_bytes())
    p = ocs(data, "reconcile", "--cdrs", str(mixed))
    assert p.returncode == 1 and "exported 2 times" in p.stdout
