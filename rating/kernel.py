"""numba kernels over a compiled tariff blob (rating/compiled.py): cost, inverse, batch.

They implement the rules in rating/reference.py by walking SEGMENTS of the unit axis in which band and
tier are constant, and counting the increment starts inside each segment with integer arithmetic, so
the work per report is the number of band/tier changes it crosses, not the number of increments.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rating.compiled import (
    H_KEYRATE,
    H_KEYS,
    H_NKEYS,
    H_NPLANS,
    H_PLANWILD,
    H_RATES,
    NO_CHANGE,
    R_FEE,
    R_FIRST,
    R_INC,
    R_NTIERS,
    R_PRICES,
    R_TIERS,
    R_TZ,
    R_UNIT,
    R_WEEK,
    RF,
    TZ_FROM,
    TZ_SHIFT,
    TZ_TO,
)

MAX_COST = 1 << 62
FAR = 1 << 62          # "never" on the unit and time axes
BIG_N = 1 << 22        # below this many increments n * price (price <= 2**40) cannot overflow
UNIT_SECONDS = 0
MAX_SECONDS = (1 << 32) - 1
MAX_OTHER = 1 << 62


@njit(cache=True, error_model="numpy", inline="always")
def _n_starts(x: int, first: int, inc: int) -> int:
    """Number of increment starts below position x."""
    if x <= 0:
        return 0
    if x <= first:
        return 1
    return 1 + (x - first + inc - 1) // inc


@njit(cache=True, error_model="numpy", inline="always")
def _start_of(k: int, first: int, inc: int) -> int:
    if k == 0:
        return 0
    return first + (k - 1) * inc


@njit(cache=True, error_model="numpy")
def _band_at(T: np.ndarray, week: int, tz: int, t: int) -> tuple[int, int]:
    """(band code, instant the band may next change) for unix second t."""
    n = T[tz]
    off = T[tz + 1]
    tz_next = FAR
    if n > 0:
        at = tz + 2
        if t < T[at]:
            tz_next = T[at]
        else:
            if TZ_FROM <= t < TZ_TO:   # O(1): start from the bucket's last transition
                lo = T[at + 2 * n + ((t - TZ_FROM) >> TZ_SHIFT)]
                while lo + 1 < n and T[at + lo + 1] <= t:
                    lo += 1
            else:
                lo, hi = 0, n - 1          # largest i with at[i] <= t
                while lo < hi:
                    mid = (lo + hi + 1) >> 1
                    if T[at + mid] <= t:
                        lo = mid
                    else:
                        hi = mid - 1
            off = T[at + n + lo]
            if lo + 1 < n:
                tz_next = T[at + lo + 1]
    local = t + off
    wsec = (local + 3 * 86400) % 604800     # second of the local week; 1970-01-01 was a Thursday
    if wsec < 0:
        wsec += 604800
    m = wsec // 60
    packed = T[week + m]
    band = packed & 255
    dm = packed >> 8
    until = tz_next
    if dm < NO_CHANGE:
        change = t + dm * 60 - (wsec - m * 60)
        if change < until:
            until = change
    return band, until


@njit(cache=True, error_model="numpy")
def band_until_one(T: np.ndarray, r: int, t: int) -> int:
    """The instant rate r's band may next change at or after unix second t (FAR: no bands)."""
    rec = T[H_RATES] + r * RF
    week = T[rec + R_WEEK]
    if week < 0:
        return FAR
    _, until = _band_at(T, week, T[rec + R_TZ], t)
    return until


@njit(cache=True, error_model="numpy")
def cost_one(T: np.ndarray, r: int, before: int, units: int, start: int,
             period_used: int) -> int:
    """Micro-units for units [before, before+units) of rate r (see rating/reference.py)."""
    if units <= 0:
        return 0
    rec = T[H_RATES] + r * RF
    unit = T[rec + R_UNIT]
    first = T[rec + R_FIRST]
    inc = T[rec + R_INC]
    ntiers = T[rec + R_NTIERS]
    tiers = T[rec + R_TIERS]
    prices = T[rec + R_PRICES]
    week = T[rec + R_WEEK]
    tz = T[rec + R_TZ]
    acc = T[rec + R_FEE] if before == 0 else 0
    end = before + units
    band = 0
    timed = week >= 0 and unit == UNIT_SECONDS
    if week >= 0 and not timed:
        band, _ = _band_at(T, week, tz, start)
    p = before
    while p < end:
        q = end
        if timed:
            band, until = _band_at(T, week, tz, start + (p - before))
            bq = before + (until - start)
            if bq < q:
                q = bq
        tier = 0
        if ntiers > 1:
            pos = period_used + p
            for j in range(1, ntiers):
                tj = T[tiers + j]
                if tj <= pos:
                    tier = j
                else:
                    nq = tj - period_used
                    if nq < q:
                        q = nq
                    break
        n = _n_starts(q, first, inc) - _n_starts(p, first, inc)
        if n > 0:
            price = T[prices + band * ntiers + tier]
            if price > 0:
                if n >= BIG_N and n > (MAX_COST - acc) // price:
                    return MAX_COST
                acc += n * price
                if acc >= MAX_COST:
                    return MAX_COST
        p = q
    return acc


@njit(cache=True, error_model="numpy")
def max_units_one(T: np.ndarray, r: int, budget: int, before: int, start: int,
                  period_used: int, limit: int) -> int:
    """Largest U <= limit with cost_one(T, r, before, U, start, period_used) <= budget."""
    if budget < 0 or limit <= 0:
        return 0
    rec = T[H_RATES] + r * RF
    unit = T[rec + R_UNIT]
    first = T[rec + R_FIRST]
    inc = T[rec + R_INC]
    ntiers = T[rec + R_NTIERS]
    tiers = T[rec + R_TIERS]
    prices = T[rec + R_PRICES]
    week = T[rec + R_WEEK]
    tz = T[rec + R_TZ]
    acc = T[rec + R_FEE] if before == 0 else 0
    if acc > budget:
        return 0
    cap = MAX_SECONDS if unit == UNIT_SECONDS else MAX_OTHER
    if limit < cap:
        cap = limit
    end = before + cap
    band = 0
    timed = week >= 0 and unit == UNIT_SECONDS
    if week >= 0 and not timed:
        band, _ = _band_at(T, week, tz, start)
    p = before
    while p < end:
        q = end
        if timed:
            band, until = _band_at(T, week, tz, start + (p - before))
            bq = before + (until - start)
            if bq < q:
                q = bq
        tier = 0
        if ntiers > 1:
            pos = period_used + p
            for j in range(1, ntiers):
                tj = T[tiers + j]
                if tj <= pos:
                    tier = j
                else:
                    nq = tj - period_used
                    if nq < q:
                        q = nq
                    break
        k0 = _n_starts(p, first, inc)
        n = _n_starts(q, first, inc) - k0
        if n > 0:
            price = T[prices + band * ntiers + tier]
            if price > 0:
                afford = (budget - acc) // price
                if afford < n:
                    stop = _start_of(k0 + afford, first, inc)   # first increment we cannot pay
                    return stop - before
                acc += n * price
        p = q
    return cap


@njit(cache=True, error_model="numpy")
def find_rate(T: np.ndarray, plan: int, rg: int) -> int:
    """Rate index for (plan index, rating group): exact first, then the plan's wildcard; -1 none."""
    if plan < 0 or plan >= T[H_NPLANS]:
        return -1
    key = (plan << 32) | rg
    keys = T[H_KEYS]
    lo, hi = 0, T[H_NKEYS]
    while lo < hi:
        mid = (lo + hi) >> 1
        if T[keys + mid] < key:
            lo = mid + 1
        else:
            hi = mid
    # Annotated locals type the numpy element as the int it is; numba compiles them away.
    if lo < T[H_NKEYS] and T[keys + lo] == key:
        exact: int = T[T[H_KEYRATE] + lo]
        return exact
    wild: int = T[T[H_PLANWILD] + plan]
    return wild


@njit(cache=True, error_model="numpy")
def rate_batch(T: np.ndarray, plan: np.ndarray, rg: np.ndarray, units: np.ndarray,
               start: np.ndarray, period_used: np.ndarray, before: np.ndarray,
               out_cost: np.ndarray, out_rate: np.ndarray) -> None:
    """Rate arrays of reports at once. out_rate[i] = rate index or -1 (no rate: out_cost[i] = 0).
    Consecutive records with the same (plan, rating group) reuse the previous lookup."""
    last_plan, last_rg, r = -1, -1, -1
    for i in range(units.shape[0]):          # pass 1: resolve rates
        if plan[i] != last_plan or rg[i] != last_rg:
            last_plan, last_rg = plan[i], rg[i]
            r = find_rate(T, last_plan, last_rg)
        out_rate[i] = r
    for i in range(units.shape[0]):          # pass 2: price
        r = out_rate[i]
        out_cost[i] = 0 if r < 0 else cost_one(T, r, before[i], units[i], start[i], period_used[i])


@njit(cache=True, error_model="numpy")
def rate_batch_idx(T: np.ndarray, rate: np.ndarray, units: np.ndarray, start: np.ndarray,
                   period_used: np.ndarray, before: np.ndarray, out_cost: np.ndarray) -> None:
    """Rate arrays of reports whose rate indexes are already resolved (rate[i] >= 0)."""
    for i in range(units.shape[0]):
        out_cost[i] = cost_one(T, rate[i], before[i], units[i], start[i], period_used[i])


def warm() -> None:
    """Compile (or load from the numba cache) every kernel now, before traffic arrives."""
    from rating.compiled import compile_tariff
    from rating.tariff import parse_tariff
    t = parse_tariff('currency = "EUR"\n[[rate]]\nrating_group = 1\nunit = "seconds"\n'
                     'price = "0.01"\nincrement = 60\n[[rate.tier]]\nfrom = 10\nprice = "0"\n'
                     '[[rate.band]]\nfrom = "08:00"\nto = "09:00"\nprice = ["0.02", "0"]\n')
    blob, _ = compile_tariff(t)
    one = np.ones(1, dtype=np.int64)
    cost_one(blob, 0, 0, 1, 0, 0)
    band_until_one(blob, 0, 0)
    max_units_one(blob, 0, 1, 0, 0, 0, 10)
    rate_batch(blob, one * 0, one, one, one, one, one * 0, np.empty(1, np.int64), np.empty(1, np.int64))
    rate_batch_idx(blob, one * 0, one, one, one, one * 0, np.empty(1, np.int64))
