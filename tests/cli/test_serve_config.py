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
    ('listen = ":3868"', "listen ':3868' has no host: say 0.0.0.0:3868 or"),
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


@pytest.mark.parametrize("key, near", [
    ("allow_peers", "allow_peer"), ("allowed_peer", "allow_peer"), ("listen_addr", "listen"),
    ("max_inflight", "max_in_flight"), ("validity-tim", "validity_time")])
def test_an_unknown_key_suggests_the_nearest(tmp_path, key: str, near: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "ocs.toml"
    f.write_text(f"{key} = 1\n")
    with pytest.raises(ConfigError) as info:
        load(f, {})
    assert str(info.value) == f"{f}: unknown setting {key!r}; did you mean {near}?"


def test_allow_peer_is_the_flags_name_and_allowed_peers_still_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "ocs.toml"
    f.write_text('allow_peer = ["pgw1"]\n')
    assert load(f, {}).allowed_peers == ["pgw1"]
    f.write_text('allowed_peers = ["pgw2"]\n')               # the older key, deprecated
    assert load(f, {}).allowed_peers == ["pgw2"]
    assert load(f, {"allow_peer": ["pgw3"]}).allowed_peers == ["pgw3"]  # the flag wins
    f.write_text("reuse_port = true\n")                      # internal, not a setting
    with pytest.raises(ConfigError, match="unknown setting 'reuse_port'"):
        load(f, {})


def _serve_flags() -> set[str]:
    from ocs.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a.choices, dict))
    serve = sub.choices["serve"]
    names = set()
    for action in serve._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and long[0] not in ("--help", "--config"):
            names.add(long[0][2:].removeprefix("no-").replace("-", "_"))
    return names


def test_every_flag_is_the_setting_of_its_name() -> None:
    from ocs.cli.serve import SETTING_FLAGS
    from ocs.config import setting_names
    flags = _serve_flags()
    assert flags == set(SETTING_FLAGS)
    assert flags <= set(setting_names())


def test_the_readme_lists_every_setting_and_no_other() -> None:
    import re
    from pathlib import Path

    from ocs.config import setting_names
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("<!-- settings -->")[1].split("<!-- /settings -->")[0]
    keys = []
    for row in table.splitlines()[2:]:
        keys += re.findall(r"`([a-z_]+)`", row.split("|")[1])
    assert sorted(keys) == sorted(setting_names())
