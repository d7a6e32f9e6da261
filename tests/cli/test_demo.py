"""`ocs demo` end to end (small: 500 subscribers, 3 s of traffic) and its refusal to touch a dir
it did not make."""

from __future__ import annotations

import subprocess
import sys

from ocs.cli.demo_run import MARKER


def run_demo(cwd, *args):
    return subprocess.run([sys.executable, "-m", "ocs", "demo", "--no-progress", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_demo_runs_the_main_job_and_exits_0(tmp_path):
    proc = run_demo(tmp_path, "--seconds", "3", "--subscribers", "500")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    data = tmp_path / "ocs-demo"                       # the embedded default, under the cwd
    assert (data / MARKER).exists() and (data / "data.mdb").exists()
    assert "requests served" in out and "p99" in out
    served = int(out.split("requests served")[1].split()[0].replace(",", ""))
    assert served > 0
    assert "revenue (EUR)" in out and "total" in out
    # the back office ran or was reported as skipped, never silently dropped
    for step in ("cdr export", "reconcile", "invoice"):
        assert f"ocs {step}" in out or step in out
    # revenue is what the CDRs hold: at least one service earned money
    total = out.split("    total")[1].split()[0]
    assert float(total) > 0

    # a re-run wipes its own dir and starts afresh
    again = run_demo(tmp_path, "--seconds", "1", "--subscribers", "50")
    assert again.returncode == 0, again.stdout + again.stderr


def test_demo_refuses_a_dir_it_did_not_make(tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    proc = run_demo(tmp_path, "--dir", str(other), "--seconds", "1")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ocs: error:") and "not made by ocs demo" in proc.stderr
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
