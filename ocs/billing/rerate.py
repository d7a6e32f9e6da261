"""Price simulation: re-rate exported CDRs with another tariff and compare revenue per plan and RG.

Each CDR is one (session, rating group) burst, rated cumulatively from 0 as the server does: its money
units (used_units - bundle_units; bundles cost nothing) form one report starting at start_time. The
tier position (period_used) is the account's usage of that rating group earlier in the same UTC
calendar month (the server's billing period), from the CDRs themselves, ordered by start_time. A
report's band is taken from its start and split as time runs on (seconds), as in rating/reference.py;
the server may have seen the burst as several reports, so banded rates can differ by the increments
that straddle a report edge. A refund CDR (REFUND_ACCOUNT: the only CDRs with a negative amount)
is priced like a sale and counted negative, and adds nothing to the tier position: rerating with the
tariff the server used gives a delta of 0 for refunds as for sales. Known differences from the
server: a CDR's amount is what the balance paid, so a burst a money bundle paid for shows its price
as a delta; and a burst after FINAL in the same session was spared the connect fee, which rerating
each CDR from 0 charges again.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import numpy as np

from ocs.billing.cdr.columns import CdrColumns
from rating.rater import Rater
from rating.tariff import UNIT_CODES

CHUNK = 1 << 18


class Progress(Protocol):
    """What rerate reports to (a tqdm bar): `update(n)` after each n CDRs rated."""

    def update(self, n: int) -> object: ...


@dataclass(slots=True)
class GroupResult:
    plan: str
    rating_group: int
    cdrs: int
    units: int
    revenue_before: int       # micro-units
    revenue_after: int
    unrated: int              # CDRs the new tariff has no rate for (or a rate in another unit)

    @property
    def delta(self) -> int:
        return self.revenue_after - self.revenue_before

    @property
    def delta_percent(self) -> Decimal | None:
        if self.revenue_before == 0:
            return None
        return (Decimal(self.delta) * 100 / Decimal(self.revenue_before)).quantize(Decimal("0.01"))


def month_index(ts: np.ndarray) -> np.ndarray:
    """UTC calendar month number (months since 1970-01) of unix seconds."""
    return ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)


def period_used(cols: CdrColumns, counted: np.ndarray | None = None) -> np.ndarray:
    """Units of the same account and rating group used earlier in the same UTC month (of
    `counted`, default used_units: the caller passes 0 for CDRs that used nothing, like refunds)."""
    n = len(cols)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    month = month_index(cols.start_time)
    order = np.lexsort((cols.start_time, month, cols.rating_group, cols.account.codes))
    acc, rg, mo = cols.account.codes[order], cols.rating_group[order], month[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (acc[1:] != acc[:-1]) | (rg[1:] != rg[:-1]) | (mo[1:] != mo[:-1])
    units = (cols.used_units if counted is None else counted)[order]
    inclusive = np.cumsum(units)
    exclusive = inclusive - units
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = exclusive - exclusive[group_start]
    return out


def rerate(cols: CdrColumns, rater: Rater, progress: Progress | None = None) -> list[GroupResult]:
    """Revenue before (the CDR amounts) and after (`rater`), grouped by (plan, rating group)."""
    n = len(cols)
    plan_map = np.array([rater.plan_index.get(p, -1) for p in cols.plan.names] or [-1],
                        dtype=np.int64)
    plans = plan_map[cols.plan.codes]
    money_units = cols.used_units - cols.bundle_units
    if (money_units < 0).any() or (cols.used_units < 0).any():
        raise ValueError("a CDR has negative used_units or bundle_units > used_units")
    refund = cols.amount < 0
    period = period_used(cols, np.where(refund, 0, cols.used_units))
    after = np.zeros(n, dtype=np.int64)
    rate_idx = np.empty(n, dtype=np.int64)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        c, r = rater.rate_batch(plans[lo:hi], cols.rating_group[lo:hi], money_units[lo:hi],
                                cols.start_time[lo:hi], period[lo:hi])
        after[lo:hi], rate_idx[lo:hi] = c, r
        if progress is not None:
            progress.update(hi - lo)
    # a rate in another unit than the CDR's cannot price it
    rate_unit = np.array([UNIT_CODES[r.unit] for r in rater.tariff.rates] + [-1], dtype=np.int64)
    cdr_unit = np.array([UNIT_CODES.get(u, -2) for u in cols.unit.names] or [-2],
                        dtype=np.int64)[cols.unit.codes]
    rated = (rate_idx >= 0) & (rate_unit[rate_idx] == cdr_unit)
    after[~rated] = 0
    after[refund] = -after[refund]

    key = cols.plan.codes.astype(np.int64) << 32 | (cols.rating_group & 0xFFFFFFFF)
    keys, inverse = np.unique(key, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(keys)))

    def sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values.astype(np.int64)[order], starts) if n else values

    count = np.diff(np.append(starts, n))
    units, before, aft = sums(cols.used_units), sums(cols.amount), sums(after)
    unrated = sums((~rated).astype(np.int64))
    out = []
    for i, k in enumerate(keys):
        out.append(GroupResult(plan=cols.plan.names[int(k) >> 32], rating_group=int(k) & 0xFFFFFFFF,
                               cdrs=int(count[i]), units=int(units[i]),
                               revenue_before=int(before[i]), revenue_after=int(aft[i]),
                               unrated=int(unrated[i])))
    return sorted(out, key=lambda g: (g.plan, g.rating_group))
