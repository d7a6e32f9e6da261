from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.money import MoneyError, format_micro, to_micro


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_micro_round_trip(amount: int) -> None:
    assert to_micro(format_micro(amount)) == amount


@pytest.mark.parametrize("text,expected", [("0.01", 10_000), ("-1.5", -1_500_000), ("3", 3_000_000),
                                           ("0.000001", 1), (" 2.50 ", 2_500_000)])
def test_to_micro(text: str, expected: int) -> None:
    assert to_micro(text) == expected


@pytest.mark.parametrize("bad", ["abc", "0.0000001", "NaN", "inf", ""])
def test_to_micro_rejects(bad: str) -> None:
    with pytest.raises(MoneyError):
        to_micro(bad)


def test_no_float_drift() -> None:
    # CGRateS' classic: 0.15 + 3 x 0.01 must be exactly 0.18.
    assert format_micro(to_micro("0.15") + 3 * to_micro("0.01")) == "0.180000"
    assert Decimal(format_micro(to_micro("500") - to_micro("25"))) == Decimal("475")
