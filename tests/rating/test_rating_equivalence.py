"""Kernel == Decimal oracle == pure-Python fast path, and the inverse is exact (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balance.money import format_micro
from rating import kernel, reference
from rating.compiled import tz_transitions
from rating.rater import MAX_UNITS, rater_for
from rating.tariff import DAYS, parse_tariff

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "Pacific/Chatham"]
# 2020-01-01 .. 2030-01-01, plus instants right around the offset changes of the zones above
SPAN = (1577836800, 1893456000)
DST_EDGES = sorted({at for z in ZONES for at in tz_transitions(z)[1] if SPAN[0] <= at < SPAN[1]})

SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

money = st.integers(0, 50_000).map(format_micro)


@st.composite
def band_blocks(draw, n_tiers: int) -> list[str]:
    k = draw(st.integers(0, 3))
    if k == 0:
        return []
    cuts = sorted(draw(st.sets(st.integers(0, 1439), min_size=k, max_size=k)))
    blocks = []
    for i, a in enumerate(cuts):
        b = cuts[(i + 1) % k] if k > 1 else a      # one cut: the band is the whole day from a
        days = draw(st.sets(st.sampled_from(DAYS), min_size=1, max_size=7))
        prices = [draw(money) for _ in range(n_tiers)]
        price = f'"{prices[0]}"' if n_tiers == 1 else "[" + ", ".join(f'"{p}"' for p in prices) + "]"
        blocks.append(f'[[rate.band]]\nname = "b{i}"\ndays = [{", ".join(repr(d) for d in days)}]\n'
                      f'from = "{a // 60:02d}:{a % 60:02d}"\nto = "{b // 60:02d}:{b % 60:02d}"\n'
                      f'price = {price}\n'.replace("'", '"'))
    return blocks


@st.composite
def tariffs(draw, simple: bool = False) -> str:
    unit = draw(st.sampled_from(["seconds", "octets", "events"]))
    inc = draw(st.integers(1, 120))
    first = draw(st.integers(1, 120))
    text = [f'currency = "EUR"\n[[plan]]\nname = "p"\ntimezone = "{draw(st.sampled_from(ZONES))}"\n'
            f'[[rate]]\nplan = "p"\nrating_group = 7\nunit = "{unit}"\nprice = "{draw(money)}"\n'
            f'increment = {inc}\nfirst_increment = {first}\nconnect_fee = "{draw(money)}"\n']
    if not simple:
        starts = sorted(draw(st.sets(st.integers(1, 6000), max_size=2)))
        for s in starts:
            text.append(f'[[rate.tier]]\nfrom = {s}\nprice = "{draw(money)}"\n')
        text.extend(draw(band_blocks(len(starts) + 1)))
    return "".join(text)


starts = st.one_of(st.integers(*SPAN),
                   st.sampled_from(DST_EDGES).flatmap(lambda t: st.integers(t - 5400, t + 1800)))


@SETTINGS
@given(tariffs(), st.integers(0, 4000), st.integers(0, 4000), starts, st.integers(0, 8000))
def test_kernel_equals_oracle(text, before, units, start, period_used):
    t = parse_tariff(text)
    rater = rater_for(t, 1)
    rate = rater.find("p", 7)
    want = reference.cost(t, rate, before, units, start, period_used)
    got = kernel.cost_one(rater.blob, rate.index, before, units, start, period_used)
    assert got == want
    assert rater.cost(rate, before, units, start, period_used) == want


@SETTINGS
@given(tariffs(), starts, st.data())
def test_band_until_is_the_next_band_edge(text, t, data):
    """The oracle's band is the same from t to until - 1; at until the band or the offset changes
    (the kernel also stops at a zone's offset change, where a band may or may not change)."""
    tariff = parse_tariff(text)
    rater = rater_for(tariff, 1)
    rate = rater.find("p", 7)
    tz = tariff.plans["p"].timezone
    until = rater.band_until(rate, t)
    band = reference.band_at(rate, tz, t)
    if until is None:  # no bands, or one band all week in a zone without transitions
        assert reference.band_at(rate, tz, data.draw(st.integers(t, t + 8 * 86400))) == band
        return
    assert t < until
    inside = data.draw(st.integers(t, min(until - 1, t + 8 * 86400)))
    assert reference.band_at(rate, tz, inside) == band
    assert reference.band_at(rate, tz, until - 1) == band
    zone = reference._zone(tz)

    def offset(x: int):  # type: ignore[no-untyped-def]
        return datetime.fromtimestamp(x, UTC).astimezone(zone).utcoffset()

    assert reference.band_at(rate, tz, until) != band or offset(until) != offset(until - 1)


@SETTINGS
@given(tariffs(simple=True), st.integers(0, 10**6), st.integers(0, 10**6), starts,
       st.integers(0, 10**9))
def test_fast_path_equals_kernel_and_oracle(text, before, units, start, budget):
    t = parse_tariff(text)
    rater = rater_for(t, 1)
    rate = rater.find("p", 7)
    assert rate.simple
    fast = rater.cost(rate, before, units, start)
    assert fast == kernel.cost_one(rater.blob, rate.index, before, units, start, 0)
    if units // rate.increment < 3000:
        assert fast == reference.cost(t, rate, before, units, start)
    cap = MAX_UNITS[rate.unit]
    assert rater.max_units(rate, budget, before, start) == kernel.max_units_one(
        rater.blob, rate.index, budget, before, start, 0, cap)


@SETTINGS
@given(tariffs(), st.integers(0, 3000), starts, st.integers(0, 8000), st.integers(0, 300_000))
def test_inverse_is_exact(text, before, start, period_used, budget):
    t = parse_tariff(text)
    rater = rater_for(t, 1)
    rate = rater.find("p", 7)
    limit = 4000
    u = rater.max_units(rate, budget, before, start, period_used, limit=limit)
    assert 0 <= u <= limit
    assert reference.cost(t, rate, before, u, start, period_used) <= budget
    if u < limit:
        assert reference.cost(t, rate, before, u + 1, start, period_used) > budget


@SETTINGS
@given(tariffs(), st.integers(0, 3000), st.integers(0, 3000), starts, st.integers(0, 8000))
def test_cumulative_split_costs_the_same(text, a, b, start, period_used):
    """Two reports of seconds cost what one report of their sum costs (time runs on)."""
    t = parse_tariff(text)
    rater = rater_for(t, 1)
    rate = rater.find("p", 7)
    whole = rater.cost(rate, 0, a + b, start, period_used)
    if rate.unit == "seconds" or not rate.bands:
        assert rater.cost(rate, 0, a, start, period_used) + \
            rater.cost(rate, a, b, start + a, period_used) == whole


@SETTINGS
@given(tariffs(), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000), starts,
                                     st.integers(0, 8000)), min_size=1, max_size=20))
def test_batch_equals_one_by_one(text, rows):
    t = parse_tariff(text)
    rater = rater_for(t, 1)
    rate = rater.find("p", 7)
    before, units, start, period = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    plan = np.full(len(rows), rater.plan_index["p"], dtype=np.int64)
    rgs = np.array([7 if i % 3 else 8 for i in range(len(rows))], dtype=np.int64)
    costs, idx = rater.rate_batch(plan, rgs, units, start, period, before)
    for i, (b, u, s, p) in enumerate(rows):
        if rgs[i] == 7:
            assert idx[i] == rate.index
            assert costs[i] == rater.cost(rate, b, u, s, p)
        else:
            assert idx[i] == -1 and costs[i] == 0


def test_band_boundary_inside_a_dst_jump():
    """Paris springs forward at 02:00 -> 03:00 on 2020-03-29: a 00:00-03:00 band ends at the jump."""
    t = parse_tariff('currency = "EUR"\n[[plan]]\nname = "p"\ntimezone = "Europe/Paris"\n'
                     '[[rate]]\nplan = "p"\nrating_group = 7\nunit = "seconds"\nprice = "0.02"\n'
                     'increment = 60\n[[rate.band]]\nfrom = "00:00"\nto = "03:00"\nprice = "0.01"\n')
    rater = rater_for(t, 1)
    rate = rater.find("p", 7)
    start = 1585443000          # 2020-03-29 00:50 UTC = 01:50 Paris; the jump is at 01:00 UTC
    # 10 minutes in the band, then 50 minutes at 03:00+ local outside it
    assert rater.cost(rate, 0, 3600, start) == 10 * 10_000 + 50 * 20_000
    assert reference.cost(t, rate, 0, 3600, start) == 10 * 10_000 + 50 * 20_000


def test_brief_example_175_seconds_is_three_increments():
    t = parse_tariff('currency = "EUR"\n[[rate]]\nrating_group = 1\nunit = "seconds"\n'
                     'price = "0.01"\nincrement = 60\n')
    rater = rater_for(t, 1)
    rate = rater.find("default", 1)
    assert rater.cost(rate, 0, 175, 0) == 30_000
    assert rater.cost(rate, 0, 45, 0) + rater.cost(rate, 45, 130, 45) == 30_000
    assert rater.cost(rate, 0, 0, 0) == 0
    assert rater.max_units(rate, 30_000, 0, 0) == 180
