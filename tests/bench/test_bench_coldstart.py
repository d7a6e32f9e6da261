"""`python -m bench.coldstart` at a tiny scale: it runs end to end (provision, open sessions, start,
touch every session, kill -9 mid-load, restart) and reports every figure, with money conserved and
`ocs reconcile` passing. No speed assertion: figures only have to be there and positive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIGURES = ("provision_s", "open_sessions_s", "data_mdb_bytes", "start_to_first_answer_s",
           "start_to_ready_line_s", "touch_all_s", "engine_rss_bytes", "engine_hwm_bytes",
           "engine_rss_anon_bytes", "engine_rss_file_bytes", "front_rss_bytes", "front_hwm_bytes",
           "answered_before_kill", "recovery_s", "recovery_ready_line_s",
           "engine_rss_after_recovery_bytes")


def test_coldstart_small_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "cold.json"
    proc = subprocess.run([sys.executable, "-m", "bench.coldstart", "--accounts", "2000",
                           "--sessions", "200", "--kill-after", "1", "--timeout", "20",
                           "--no-progress", "--json", str(out), "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert (rep["accounts"], rep["sessions"]) == (2000, 200)
    figures = rep["figures"]
    missing = [f for f in FIGURES if f not in figures]
    assert not missing, missing
    assert all(figures[f]["value"] > 0 for f in FIGURES), figures
    assert figures["engine_hwm_bytes"]["value"] >= figures["engine_rss_bytes"]["value"]
    assert rep["conservation"]["ok"] and rep["conservation"]["debited"] > 0, rep["conservation"]
    assert rep["reconcile_exit"] == 0, rep["reconcile_output"]
    assert rep["server_exits"] == [-9, 0]
    assert "| recovery_s " in proc.stdout and "| reconcile " in proc.stdout
