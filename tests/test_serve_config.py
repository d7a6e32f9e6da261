"""`ocs serve` settings: flags over TOML over defaults; a bad setting is a one-line error, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ocs.config import ConfigError, load


def test_flags_override_file_and_log_level_is_case_insensitive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "ocs.toml"
    f.write_text('validity-time = 60\nlog_level = "warning"\nlisten = "127.0.0.1:3999"\n')
    cfg = load(f, {"validity_time": 30})
    assert (cfg.validity_time, cfg.log_level, cfg.listen) == (30, "WARNING", ["127.0.0.1:3999"])


@pytest.mark.parametrize("text, says", [
    ('log_level = "loud"', "log_level must be one of"),
    ("validity_time = 0", "validity_time must be > 0"),
    ('validity_time = "soon"', "validity_time must be an integer"),
    ('colour = "blue"', "unknown setting 'colour'"),
    ('listen = "nowhere"', "listen must be HOST:PORT"),
    ("listen = [", "ocs.toml"),
    ("quota_holding_time = -1", "quota_holding_time must be an integer >= 0"),
    ("quota_threshold_percent = 150", "quota_threshold_percent must be an integer 0..100"),
    ("session_timeout = -1", "session_timeout must be an integer >= 0"),
    ('max_quota = {octets = "1GB"}', "max_quota.octets must be an integer"),
    ("default_quota = {seconds = 0}", "default_quota.seconds must be an integer 1.."),
    ("default_quota = {minutes = 5}", "default_quota: unknown unit 'minutes'"),
    ("max_quota = {seconds = 5000000000}", "max_quota.seconds must be an integer 1..4294967295"),
    ("max_connections = 0", "max_connections must be >= 1"),
])
def test_bad_settings_are_refused(tmp_path, text: str, says: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "ocs.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=says.replace("[", r"\[")):
        load(f, {})


def test_cli_reports_a_bad_config_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "ocs.toml"
    f.write_text('log_level = "loud"\n')
    p = subprocess.run([sys.executable, "-m", "ocs", "serve", "--data", str(tmp_path / "d"),
                        "--config", str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "log_level must be one of" in lines[0], p.stderr
    assert not (tmp_path / "d" / "data.mdb").exists()  # refused before touching the store
