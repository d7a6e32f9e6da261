"""A burst's units priced by the tariff: the balance.pricing.Pricing the charging rules hand to
balance ops.

Money units of a (session, rating group) are rated cumulatively: each report costs
rater.cost(rate, units paid with money before, units now, ...), so 45 s + 130 s at 60/60 is 3
increments, never 4. Units a bundle pays for cost no money and do not advance the money count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rating.rater import Rater
    from rating.tariff import Rate


@dataclass(slots=True, frozen=True)
class BurstPricing:
    """Units after `before` (+ what the op settled) money units of one burst, priced at `at`.

    `fee_waived`: the connect fee is once per session and rating group, so a burst after FINAL,
    which starts its cumulative rating from 0 again (its own CDR), gets it back on its first
    units. `limit` caps what afford answers (the units asked for)."""

    rater: Rater
    rate: Rate
    before: int       # money units of the burst paid before this request
    at: int           # instant the units begin (bands)
    period: int       # billing-period usage before the session's units (tiers)
    fee_waived: int = 0
    limit: int | None = None

    def cost(self, settled: int, n: int) -> int:
        b = self.before + settled
        cost = self.rater.cost(self.rate, b, n, self.at, self.period)
        return cost - self.fee_waived if n > 0 and b == 0 else cost

    def afford(self, settled: int, budget: int) -> int:
        b = self.before + settled
        waived = self.fee_waived if b == 0 else 0
        return self.rater.max_units(self.rate, budget + waived, b, self.at, self.period,
                                    limit=self.limit)


def fee_waived(rate: Rate, fee_paid: bool) -> int:
    """What a burst gets back of the connect fee: all of it when an earlier burst paid it."""
    return rate.connect_fee if fee_paid else 0
