from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balance.money import MoneyError, format_micro, to_micro


@given(st.integers(min_value=-(1 << 60), max_value=1 << 60))
def test_micro_round_trip(amount: int) -> None:
    assert to_micro(format_micro(amount)) == amount


@pytest.mark.parametrize("text,expected", [("0.01", 10_000), ("-1.5", -1_500_000), ("3", 3_000_000),
                                           ("0.000001", 1), (" 2.50 ", 2_500_000)])
def test_to_micro(text: str, expected: int) -> None:
    assert to_micro(text) == expected


@pytest.mark.parametrize("bad", ["abc", "0.0000001", "NaN", "inf", "", "1_000", "\u0661\u0660",
                                 "1e3", "1e30", "99999999999999999999999", "--1", "1.2.3"])
def test_to_micro_rejects(bad: str) -> None:
    with pytest.raises(MoneyError):
        to_micro(bad)


def test_no_float_drift() -> None:
    # CGRateS' classic: 0.15 + 3 x 0.01 must be exactly 0.18.
    assert format_micro(to_micro("0.15") + 3 * to_micro("0.01")) == "0.180000"
    assert Decimal(format_micro(to_micro("500") - to_micro("25"))) == Decimal("475")


def test_cli_refuses_an_amount_past_the_store_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    from importlib import resources
    data = str(tmp_path / "d")
    example = str(resources.files("ocs") / "data" / "example-tariff.toml")
    assert subprocess.run([sys.executable, "-m", "ocs", "tariff", "load", example, "--data", data,
                           "--effective-from", "1970-01-01"], capture_output=True).returncode == 0
    run = lambda *a: subprocess.run([sys.executable, "-m", "ocs", "account", *a, "--data", data],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    assert run("create", "4917", "--balance", "1").returncode == 0
    for argv in (["topup", "4917", "1e30"], ["create", "4918", "--balance", "99999999999999999999"]):
        p = run(*argv)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "amount" in p.stderr, p.stderr
