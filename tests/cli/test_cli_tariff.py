"""`ocs tariff ...` end to end through ocs.cli.main against tmp_path data dirs."""

from __future__ import annotations

import json
from importlib import resources

from ocs.cli import main

EXAMPLE = str(resources.files("ocs") / "data" / "example-tariff.toml")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_load_show_list(tmp_path, capsys):
    data = str(tmp_path / "d")
    rc, out, _ = run(capsys, "tariff", "load", EXAMPLE, "--data", data,
                     "--effective-from", "2020-01-01T00:00:00Z")
    assert rc == 0 and "version 1" in out and "2020-01-01T00:00:00Z" in out
    rc, out, _ = run(capsys, "tariff", "load", EXAMPLE, "--data", data, "--effective-from", "2100-01-01")
    assert rc == 0 and "version 2" in out
    rc, out, _ = run(capsys, "tariff", "list", "--json", "--data", data)
    rows = json.loads(out)
    assert [r["version"] for r in rows] == [1, 2] and [r["in_force"] for r in rows] == [True, False]
    rc, out, _ = run(capsys, "tariff", "show", "--json", "--data", data)
    shown = json.loads(out)
    assert shown["version"] == 1 and shown["currency"] == "EUR"
    voice = next(r for r in shown["plans"]["default"]["rates"] if r["rating_group"] == 100)
    assert voice["price"] == "0.020000" and len(voice["bands"]) == 3
    assert shown["plans"]["postpaid"]["tax_rate"] == "0.200000"
    rc, out, _ = run(capsys, "tariff", "show", "2", "--data", data)
    assert rc == 0 and out.startswith("# version 2") and 'currency = "EUR"' in out
    rc, out, _ = run(capsys, "tariff", "list", "--data", data)
    assert out.splitlines()[0].startswith("*    1")


def test_errors_are_one_line_exit_2_and_change_nothing(tmp_path, capsys):
    data = str(tmp_path / "d")
    bad = tmp_path / "bad.toml"
    bad.write_text('currency = "EUR"\n[[rate]]\nrating_group = 1\nunit = "litres"\nprice = "1"\n'
                   'increment = 1\n')
    rc, _out, err = run(capsys, "tariff", "load", str(bad), "--data", data)
    assert rc == 2 and err.strip() == f"ocs: error: {bad}:4: unknown unit 'litres' (use seconds, octets or events)"
    assert not (tmp_path / "d").exists()
    for argv in (["tariff", "load", str(tmp_path / "missing.toml")],
                 ["tariff", "load", EXAMPLE, "--effective-from", "yesterday"],
                 ["tariff", "load", EXAMPLE, "--effective-from", "9999-12-31T23:59:59-05:00"],
                 ["tariff", "show"], ["tariff", "list"]):
        rc, _out, err = run(capsys, *argv, "--data", data)
        assert rc == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    run(capsys, "tariff", "load", EXAMPLE, "--data", data)
    rc, _, err = run(capsys, "tariff", "show", "7", "--data", data)
    assert rc == 2 and "no tariff version 7" in err


def test_check(tmp_path, capsys):
    rc, out, _ = run(capsys, "tariff", "check", EXAMPLE, "--rating-groups", "default:100,postpaid:9")
    assert rc == 0 and "ok" in out
    rc, _, err = run(capsys, "tariff", "check", EXAMPLE, "--rating-groups", "default:9")
    assert rc == 2 and "plan 'default' has no rate for rating group 9" in err


def test_past_effective_time_means_now_and_retire(tmp_path, capsys):
    data = str(tmp_path / "d")
    rc, out, _ = run(capsys, "tariff", "load", EXAMPLE, "--data", data)
    assert rc == 0 and "version 1" in out and "in force now" in out
    # A past effective time cannot keep an earlier, later-starting version in force.
    rc, out, _ = run(capsys, "tariff", "load", EXAMPLE, "--data", data, "--effective-from", "2020-01-01")
    assert rc == 0 and "version 2" in out and "takes effect now" in out, out
    rc, out, _ = run(capsys, "tariff", "load", EXAMPLE, "--data", data, "--effective-from", "2100-01-01")
    assert rc == 0 and "scheduled from 2100-01-01T00:00:00Z" in out
    rows = json.loads(run(capsys, "tariff", "list", "--json", "--data", data)[1])
    assert [r["in_force"] for r in rows] == [False, True, False]
    rc, out, _ = run(capsys, "tariff", "retire", "2", "--data", data)
    assert rc == 0 and "version 1 is in force" in out, out
    rows = json.loads(run(capsys, "tariff", "list", "--json", "--data", data)[1])
    assert [r["in_force"] for r in rows] == [True, False, False] and rows[1]["retired_at"]
    assert run(capsys, "tariff", "list", "--data", data)[1].splitlines()[1].startswith("R    2")
    rc, out, _ = run(capsys, "tariff", "retire", "2", "--data", data)  # again: harmless
    assert rc == 0 and "already retired" in out
    # The only version in force cannot be retired; an unknown one is named.
    for version, message in (("1", "would leave no tariff version in force"), ("9", "no tariff version 9")):
        rc, _out, err = run(capsys, "tariff", "retire", version, "--data", data)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    rows2 = json.loads(run(capsys, "tariff", "list", "--json", "--data", data)[1])
    assert rows2 == rows
