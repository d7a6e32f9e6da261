"""What the server calls per request: a compiled tariff version with a pure-Python fast path.

A numba call costs ~0.7 µs from Python, more than the whole closed formula in Python (~0.4 µs), so
rates without bands or tiers are priced here in Python and only banded/tiered rates go to the kernel.
tests/rating/test_rating_equivalence.py proves both paths equal (and equal to rating/reference.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rating import kernel
from rating.compiled import compile_tariff
from rating.reference import MAX_COST, MAX_UNITS
from rating.tariff import Plan, Rate, Tariff

__all__ = ["MAX_COST", "MAX_UNITS", "Rater", "rater_for", "warm"]


@dataclass(slots=True)
class Rater:
    """One tariff version, compiled. Pure functions of their arguments; safe to share."""

    version: int
    tariff: Tariff
    blob: np.ndarray
    plan_index: dict[str, int]
    effective_from: int = 0
    currency: str = field(init=False)

    def __post_init__(self) -> None:
        self.currency = self.tariff.currency

    def plan(self, name: str) -> Plan | None:
        return self.tariff.plans.get(name)

    def find(self, plan: str, rating_group: int) -> Rate | None:
        """Exact rating group first, then the plan's wildcard; None -> DIAMETER_RATING_FAILED."""
        p = self.tariff.plans.get(plan)
        if p is None:
            return None
        rate = p.rates.get(rating_group)
        return rate if rate is not None else p.rates.get(-1)

    def band_until(self, rate: Rate, instant: int) -> int | None:
        """When the price of `rate` may next change by time of day or week (a band edge or a
        time-zone transition) after `instant`; None for a rate without bands."""
        if not rate.bands:
            return None
        until = int(kernel.band_until_one(self.blob, rate.index, instant))
        return None if until >= kernel.FAR else until

    def cost(self, rate: Rate, before: int, units: int, start: int, period_used: int = 0) -> int:
        """Micro-units owed for units [before, before+units) of one (session, rating group):
        cost(before + units) - cost(before). `start`: unix seconds the units began (bands);
        `period_used`: billing-period usage before this session's units (tiers)."""
        if units <= 0:
            return 0
        if before < 0 or period_used < 0:
            raise ValueError("before and period_used must be >= 0")
        if rate.bands or rate.tiers:
            return int(kernel.cost_one(self.blob, rate.index, before, units, start, period_used))
        first, inc = rate.first_increment, rate.increment
        end = before + units
        n = 1 if end <= first else 2 + (end - first - 1) // inc
        if before == 0:
            total = rate.connect_fee + n * rate.price
        else:
            n -= 1 if before <= first else 2 + (before - first - 1) // inc
            total = n * rate.price
        return total if total < MAX_COST else MAX_COST

    def max_units(self, rate: Rate, budget: int, before: int, start: int, period_used: int = 0,
                  limit: int | None = None) -> int:
        """Largest U with cost(rate, before, U, start, period_used) <= budget, capped at `limit`
        and at MAX_UNITS[rate.unit] (CC-Time is 32 bits)."""
        if before < 0 or period_used < 0:
            raise ValueError("before and period_used must be >= 0")
        cap = MAX_UNITS[rate.unit]
        if limit is not None:
            cap = min(cap, limit)
        if budget < 0 or cap <= 0:
            return 0
        if rate.bands or rate.tiers:
            return int(kernel.max_units_one(self.blob, rate.index, budget, before, start,
                                            period_used, cap))
        first, inc, price = rate.first_increment, rate.increment, rate.price
        if before == 0:
            budget -= rate.connect_fee
            if budget < 0:
                return 0
            k0 = 0
        else:
            k0 = 1 if before <= first else 2 + (before - first - 1) // inc   # starts below before
        if price == 0:
            return cap
        k = k0 + budget // price       # index of the first increment start we cannot pay
        stop = 0 if k == 0 else first + (k - 1) * inc
        return min(stop - before, cap)

    def rate_batch(self, plans: np.ndarray, rating_groups: np.ndarray, units: np.ndarray,
                   start: np.ndarray, period_used: np.ndarray | None = None,
                   before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(costs, rate indexes) for arrays of reports; plans are plan indexes (self.plan_index);
        a rate index of -1 means no rate (cost 0)."""
        n = len(units)
        zeros = np.zeros(n, dtype=np.int64)
        out_cost = np.empty(n, dtype=np.int64)
        out_rate = np.empty(n, dtype=np.int64)
        kernel.rate_batch(self.blob, _i64(plans), _i64(rating_groups), _i64(units), _i64(start),
                          zeros if period_used is None else _i64(period_used),
                          zeros if before is None else _i64(before), out_cost, out_rate)
        return out_cost, out_rate


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def rater_for(tariff: Tariff, version: int, effective_from: int = 0) -> Rater:
    """Compile a parsed tariff into a Rater (tens of ms; the store caches them per version)."""
    blob, plan_index = compile_tariff(tariff)
    return Rater(version=version, tariff=tariff, blob=blob, plan_index=plan_index,
                 effective_from=effective_from)


def warm() -> None:
    """Load or compile the kernels; the server calls this before accepting traffic."""
    kernel.warm()
