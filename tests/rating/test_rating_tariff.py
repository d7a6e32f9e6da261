"""Tariff parsing: the minimum schema, the extensions, and line-numbered errors."""

from __future__ import annotations

from importlib import resources

import pytest

from rating.tariff import (
    WILDCARD,
    TariffError,
    check_rating_groups,
    discount_amount,
    load_tariff,
    parse_tariff,
)

MINIMUM = '''currency = "EUR"
[[rate]]
plan = "default"
rating_group = 1
unit = "seconds"
price = "0.01"
increment = 60
first_increment = 60
connect_fee = "0"
'''


def test_minimum_schema_exactly_as_written():
    t = parse_tariff(MINIMUM)
    rate = t.find("default", 1)
    assert (rate.unit, rate.price, rate.increment, rate.first_increment, rate.connect_fee) == \
        ("seconds", 10_000, 60, 60, 0)
    assert rate.simple and t.currency == "EUR" and t.plans["default"].timezone == "UTC"


def test_example_tariff_ships_and_parses():
    path = resources.files("ocs") / "data" / "example-tariff.toml"
    t = load_tariff(str(path))
    assert set(t.plans) == {"default", "postpaid"}
    voice, data, sms = (t.find("default", rg) for rg in (100, 200, 300))
    assert voice.unit == "seconds" and len(voice.bands) == 3
    assert data.unit == "octets" and len(data.tiers) == 1
    assert sms.unit == "events"
    post = t.plans["postpaid"]
    assert post.tax_rate == 200_000 and post.recurring_fee == 19_990_000
    assert post.final_unit_action == 1 and post.redirect_address
    assert t.find("postpaid", 4242).rating_group == WILDCARD
    assert t.find("default", 4242) is None
    # 10% of (100-50) + 15% of (120-100)
    assert discount_amount(post, 120_000_000) == 5_000_000 + 3_000_000


@pytest.mark.parametrize(("patch", "line", "words"), [
    (("unit = \"seconds\"", "unit = \"minutes\""), 5, "unknown unit 'minutes'"),
    (("price = \"0.01\"", "price = \"-0.01\""), 6, "must not be negative"),
    (("price = \"0.01\"", "price = 0.01"), 6, "not a float"),
    (("connect_fee = \"0\"", "connect_fee = \"0\"\ncolour = \"red\""), 10, "unknown key 'colour'"),
    (("increment = 60", "increment = 0"), 7, "increment must be between"),
    (("price = \"0.01\"", "price = \"0.0000001\""), 6, "more than 6 decimals"),
    (("currency = \"EUR\"", "currency = \"euro\""), 1, "ISO 4217"),
    (("rating_group = 1", "rating_group = \"x\""), 4, "rating_group"),
    (("[[rate]]", "[[rate]"), 2, "TOML syntax"),
])
def test_errors_name_the_line(patch, line, words):
    text = MINIMUM.replace(*patch)
    with pytest.raises(TariffError) as exc:
        parse_tariff(text, "t.toml")
    assert str(exc.value).startswith(f"t.toml:{line}: "), str(exc.value)
    assert words in str(exc.value)


def test_overlapping_bands_are_refused_with_both_lines():
    text = MINIMUM + '''[[rate.band]]
name = "evening"
days = "mon-fri"
from = "19:00"
to = "08:00"
price = "0.005"
[[rate.band]]
name = "weekend"
days = "sat,sun"
from = "00:00"
to = "00:00"
price = "0.002"
'''
    with pytest.raises(TariffError, match=r"^t.toml:16: band 'weekend' overlaps band 'evening' "
                                          r"\(line 10\) on sat 00:00"):
        parse_tariff(text, "t.toml")


@pytest.mark.parametrize("days, want", [
    ('"mon-fri"', (0, 1, 2, 3, 4)), ('"saturday,sunday"', (5, 6)), ('["fri", "mon"]', (0, 4)),
    ('"sun-tue"', (0, 1, 6)), ('"weekend"', (5, 6)), ('"tues-thurs"', (1, 2, 3)),
])
def test_band_days(days, want):
    band = f'[[rate.band]]\ndays = {days}\nfrom = "08:00"\nto = "09:00"\nprice = "0.1"\n'
    assert parse_tariff(MINIMUM + band).find("default", 1).bands[0].days == want


@pytest.mark.parametrize("days", ['"mondayfoo"', '"mo"', '"tuesx-fri"', '["monday", "funday"]'])
def test_band_days_are_day_names_not_prefixes(days):
    band = f'[[rate.band]]\ndays = {days}\nfrom = "08:00"\nto = "09:00"\nprice = "0.1"\n'
    with pytest.raises(TariffError, match="unknown day"):
        parse_tariff(MINIMUM + band, "t.toml")


def test_band_prices_must_match_tiers():
    text = MINIMUM + '[[rate.tier]]\nfrom = 100\nprice = "0.001"\n' \
        '[[rate.band]]\nfrom = "08:00"\nto = "09:00"\nprice = "0.1"\n'
    with pytest.raises(TariffError, match=r"^t.toml:16: .*2 tiers"):
        parse_tariff(text, "t.toml")
    ok = parse_tariff(text.replace('price = "0.1"', 'price = ["0.1", "0.05"]'))
    assert ok.find("default", 1).price_grid() == [[10_000, 1_000], [100_000, 50_000]]


def test_tiers_must_increase():
    text = MINIMUM + '[[rate.tier]]\nfrom = 100\nprice = "0"\n[[rate.tier]]\nfrom = 50\nprice = "0"\n'
    with pytest.raises(TariffError, match=r"^t.toml:14: tiers must be in increasing"):
        parse_tariff(text, "t.toml")


def test_duplicate_rate_and_unknown_plan_keys():
    with pytest.raises(TariffError, match=r"^<tariff>:10: plan 'default' already has a rate for "
                                          r"rating group 1 \(line 2\)"):
        parse_tariff(MINIMUM + MINIMUM.split("\n", 1)[1])
    with pytest.raises(TariffError, match=r":3: unknown key 'colour' in \[\[plan\]\]"):
        parse_tariff('currency = "EUR"\n[[plan]]\ncolour = 1\nname = "x"\n' + MINIMUM.split("\n", 1)[1])
    with pytest.raises(TariffError, match=r":4: unknown timezone"):
        parse_tariff('currency = "EUR"\n[[plan]]\nname = "default"\ntimezone = "Mars/Base"\n'
                     + MINIMUM.split("\n", 1)[1])
    with pytest.raises(TariffError, match=r":4: .*needs redirect_address"):
        parse_tariff('currency = "EUR"\n[[plan]]\nname = "default"\nfinal_unit_action = "redirect"\n'
                     + MINIMUM.split("\n", 1)[1])


def test_check_rating_groups_names_the_plan_line():
    text = 'currency = "EUR"\n[[plan]]\nname = "default"\n' + MINIMUM.split("\n", 1)[1]
    t = parse_tariff(text, "t.toml")
    check_rating_groups(t, {"default": [1]})
    with pytest.raises(TariffError, match=r"^t.toml:2: plan 'default' has no rate for rating group 9"):
        check_rating_groups(t, [("default", 1), ("default", 9)])
    with pytest.raises(TariffError, match="plan 'gold' is in use"):
        check_rating_groups(t, {"gold": [1]})
    wild = parse_tariff(text + MINIMUM.split("\n", 1)[1].replace("rating_group = 1", 'rating_group = "*"'))
    check_rating_groups(wild, {"default": [1, 9, 12345]})
