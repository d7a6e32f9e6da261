"""The load generator end to end against real servers on 127.0.0.1 (short runs, no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import client, servers
from bench.client import INITIAL, TERMINATION, LoadSpec
from bench.provision import DEFAULT_TARIFF


@pytest.fixture
def echo():
    server = servers.launch("echo", servers.echo_argv(), ready_timeout=60)
    yield server
    assert servers.stop(server) == 0


def test_closed_loop_against_the_echo_ceiling(echo):
    spec = LoadSpec(connections=4, in_flight=2, duration=1.5, warmup=0, accounts=20,
                    progress=False, label="echo")
    res = client.run(echo.host, echo.port, spec)
    assert res.answered > 0 and res.errors == 0 and res.timeouts == 0
    assert res.result_codes == {2001: res.answered}
    # sessions run I, U..., T in order on their connection: never more T than I
    assert 0 < res.by_kind[TERMINATION] <= res.by_kind[INITIAL]
    assert res.histogram.count == res.answered and res.histogram.max > 0
    assert res.series and res.usage
    # the echo grants 10 MB; reported units are capped by the grant
    assert all(u.units > 0 and u.uncertain == 0 for u in res.usage)


def test_open_loop_is_bounded_by_count_and_measures_from_the_timetable(echo):
    spec = LoadSpec(connections=2, rate=400, duration=5, warmup=0, max_requests=300,
                    accounts=10, progress=False, label="open")
    res = client.run(echo.host, echo.port, spec)
    assert res.sent == 300                     # stopped by count, well before the duration
    assert res.answered == 300 and res.errors == 0
    assert res.histogram.min >= 0


def test_python_diameter_peer_answers_the_same_flow():
    server = servers.launch("peer", servers.peer_argv(accounts=10, balance="1000",
                                                      tariff=DEFAULT_TARIFF), ready_timeout=60)
    try:
        res = client.run(server.host, server.port,
                         LoadSpec(connections=2, in_flight=2, duration=1.5, warmup=0,
                                  accounts=10, progress=False, label="peer"))
    finally:
        assert servers.stop(server) == 0
    assert res.answered > 0 and res.errors == 0
    assert res.result_codes == {2001: res.answered}


def test_bad_options_are_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ocs", "bench", "--host", "127.0.0.1"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ocs: error: --host and --port go together"
    proc = subprocess.run([sys.executable, "-m", "ocs", "bench", "--mix", "tv=1"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "bad mix item 'tv=1'" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_ocs_bench_smoke_starts_the_server_and_checks_conservation(tmp_path):
    out, chart = tmp_path / "r.json", tmp_path / "r.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ocs", "bench", "--duration", "3", "--warmup", "0.5",
         "--accounts", "200", "--connections", "4", "--no-progress",
         "--data", str(tmp_path / "data"), "--provision", "--json", str(out),
         "--chart", str(chart)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    [run] = result["runs"]
    assert run["answered"] > 0 and run["errors"] == 0 and run["timeouts"] == 0
    assert run["server_exit"] == 0
    cons = run["conservation"]
    assert cons["ok"] and cons["expected"] == cons["debited"] > 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ours durable" in proc.stdout


def test_engine_benchmark_runs_every_line(capsys):
    """bench.engine on a few sessions: its lines, each slower than the decode baseline, and the
    per-batch tariff check with its ratio."""
    from bench import engine
    engine.main(["--sessions", "8", "--batch", "4", "--rounds", "3", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()[1:]
    rows, check = lines[:-1], lines[-1]
    assert [ln.split("µs")[0].split()[0].rstrip(",") for ln in rows] == ["decode", "decode", "durable", "decode"]
    ratios = [float(ln.split(" x")[1].split()[0]) for ln in rows]
    assert ratios[0] == 1.0 and all(r > 1.0 for r in ratios[1:])
    assert check.strip().startswith("per-batch tariff check:") and "with / without the check: x" in check
