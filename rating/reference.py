"""The pricing rules, written as plainly as possible with decimal.Decimal: the test oracle.

How a usage report is priced (cumulative per session and rating group)
------------------------------------------------------------------------
Units of one (session, rating group) lie on an axis 0, 1, 2, ... Increment 0 covers units
[0, first_increment); increment k >= 1 covers [first_increment + (k-1)*increment, ... + increment).
An increment is charged, in full and once, when its FIRST unit is used. So the session's cost after U
units is connect_fee + the prices of the increments starting below U (cost(0) = 0), and a report of
`units` after `before` costs what the increments starting in [before, before + units) cost, plus the
connect fee when before == 0. With one price this is exactly
    cost(U) = connect_fee + price * (1 + ceil(max(0, U - first_increment) / increment)).

Each increment is priced by the BAND and the TIER in force at its first unit:
- band: the instant of unit p of a report is `start + (p - before)` for seconds (one unit per second,
  from the report's start), and `start` for octets and events (no clock inside a report). The band is
  the one whose days/hours contain that instant in the plan's local time (zoneinfo; DST handled by the
  zone); no band -> the rate's own price. Usage crossing a band boundary is thus split at the boundary:
  increments starting before it take the old band's price, those starting after take the new one; an
  increment straddling the boundary is priced by the band it starts in.
- tier: the billing-period position of unit p is `period_used + p`; the tier is the last one whose
  `from` is <= that position (tier 0 starts at 0).
Costs saturate at MAX_COST (never reached by real tariffs; it keeps int64 arithmetic exact).

The inverse, max_units(budget), is the largest U with cost(before, U) <= budget (capped at the unit's
MAX_UNITS or a caller's limit). Because increments are charged at their first unit, it always ends just
before an increment that would not fit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from rating.tariff import MINUTES_PER_WEEK, Band, Rate, Tariff

MICRO = Decimal(1_000_000)
MAX_COST = 1 << 62
# Largest units max_units answers: CC-Time is Unsigned32; octets/events are Unsigned64 (int64 here).
MAX_UNITS = {"seconds": (1 << 32) - 1, "octets": 1 << 62, "events": 1 << 62}


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _covers(band: Band, minute_of_week: int) -> bool:
    length = (band.end_minute - band.start_minute) % 1440 or 1440
    return any((minute_of_week - (d * 1440 + band.start_minute)) % MINUTES_PER_WEEK < length
               for d in band.days)


def band_at(rate: Rate, timezone: str, instant: int) -> int:
    """0 for no band, else 1 + the index of the band containing `instant` (unix seconds)."""
    if not rate.bands:
        return 0
    local = datetime.fromtimestamp(instant, UTC).astimezone(_zone(timezone))
    minute = local.weekday() * 1440 + local.hour * 60 + local.minute
    for i, band in enumerate(rate.bands):
        if _covers(band, minute):
            return i + 1
    return 0


def tier_at(rate: Rate, position: int) -> int:
    tier = 0
    for j, t in enumerate(rate.tiers):
        if position >= t.start:
            tier = j + 1
    return tier


def price(rate: Rate, band: int, tier: int) -> Decimal:
    """Price of one increment in currency units (Decimal)."""
    if band == 0:
        micro = rate.price if tier == 0 else rate.tiers[tier - 1].price
    else:
        micro = rate.bands[band - 1].prices[tier]
    return Decimal(micro) / MICRO


def increment_start(rate: Rate, k: int) -> int:
    return 0 if k == 0 else rate.first_increment + (k - 1) * rate.increment


def cost(tariff: Tariff, rate: Rate, before: int, units: int, start: int,
         period_used: int = 0) -> int:
    """Micro-units owed for units [before, before+units): one loop step per charged increment."""
    if units <= 0:
        return 0
    timezone = tariff.plans[rate.plan].timezone
    total = Decimal(rate.connect_fee) / MICRO if before == 0 else Decimal(0)
    # first increment starting at or after `before`
    k = 0 if before <= 0 else 1 + max(0, -(-(before - rate.first_increment) // rate.increment))
    end = before + units
    while (s := increment_start(rate, k)) < end:
        instant = start + (s - before) if rate.unit == "seconds" else start
        total += price(rate, band_at(rate, timezone, instant), tier_at(rate, period_used + s))
        k += 1
    micro = total * MICRO
    assert micro == micro.to_integral_value()
    return min(int(micro), MAX_COST)
