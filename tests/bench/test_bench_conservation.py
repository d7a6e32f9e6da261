"""Expected charges from the bench tariff for known usage, figures worked out by hand."""

from __future__ import annotations

import pytest

from bench.client import Usage
from bench.conservation import check, expected_charges
from bench.provision import DEFAULT_TARIFF
from rating.rater import rater_for
from rating.tariff import load_tariff


@pytest.fixture(scope="module")
def rater():
    return rater_for(load_tariff(DEFAULT_TARIFF), 1)


def test_expected_charges_by_hand(rater):
    usage = [
        Usage(0, 100, "seconds", 175, 0, 0),        # 0.05 connect + 3 started minutes x 0.02
        Usage(0, 200, "octets", 1, 0, 0),           # 1 started MiB: 0.01
        Usage(1, 200, "octets", 1048577, 0, 0),     # 2 started MiB: 0.02
        Usage(1, 300, "events", 3, 0, 0),           # 3 SMS: 0.15
        Usage(2, 100, "seconds", 60, 0, 0),         # exactly one minute: 0.05 + 0.02
        Usage(2, 999, "events", 5, 0, 0),           # no rate: the server answered 5031, no charge
    ]
    expected, uncertain = expected_charges(usage, rater, 3)
    assert expected == [110_000 + 10_000, 20_000 + 150_000, 70_000]
    assert uncertain == [0, 0, 0]


def test_uncertain_is_the_extra_cost_of_unanswered_reports(rater):
    # 50 s answered (0.05 + 0.02); 20 s more sent but never answered: 70 s would cost 0.05 + 0.04
    usage = [Usage(0, 100, "seconds", 50, 0, 20)]
    expected, uncertain = expected_charges(usage, rater, 1)
    assert expected == [70_000] and uncertain == [20_000]
    before = [1_000_000]
    assert check(before, [930_000], usage, rater).ok           # unanswered one not debited
    assert check(before, [910_000], usage, rater).ok           # ... or debited
    bad = check(before, [900_000], usage, rater)               # 10_000 too much
    assert not bad.ok and bad.accounts_off == 1 and bad.debited == 100_000


def test_check_flags_a_missing_debit_and_passes_an_exact_one(rater):
    usage = [Usage(0, 300, "events", 1, 0, 0), Usage(1, 300, "events", 2, 0, 0)]
    before = [500_000, 500_000]
    ok = check(before, [450_000, 400_000], usage, rater)
    assert ok.ok and ok.expected == ok.debited == 150_000 and ok.exact_tariff
    missing = check(before, [450_000, 500_000], usage, rater)
    assert not missing.ok and missing.accounts_off == 1
    assert "MISMATCH" in missing.describe()
