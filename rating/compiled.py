"""A tariff version as one flat int64 array (the "blob") the numba kernels read.

One array rather than many keeps a per-request kernel call cheap (numba unboxes each array argument).
Layout, all int64 (offsets are indexes into the blob):
  header  [H_NRATES, H_RATES, H_NKEYS, H_KEYS, H_KEYRATE, H_NPLANS, H_PLANWILD, 0]
  rates   n_rates records of RF fields: unit, first, increment, connect_fee, n_tiers, tiers offset,
          prices offset, week offset (-1: no bands), tz offset, n_bands
  keys    sorted plan_index << 32 | rating_group, and the rate index of each; plan wildcard rates
  tiers   n_tiers period positions per rate (tier 0 = 0)
  prices  (n_bands + 1) x n_tiers micro-unit prices per rate, band 0 = outside every band
  week    per banded rate, one entry per local minute of the week (Monday 00:00 first):
          (minutes from this minute's start to the next band change, NO_CHANGE if never) << 8 | band
          code, packed so a lookup is one load
  tz      per zone: [n, offset before the first transition, at[0..n), offset[0..n), bucket[NB]]:
          bucket[b] = index of the last transition at or before TZ_FROM + b * 2**TZ_SHIFT (-1: none),
          so the kernel finds the offset in O(1) instead of a binary search per lookup
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from rating.tariff import MINUTES_PER_WEEK, UNIT_CODES, WILDCARD, Rate, Tariff, band_minutes

H_NRATES, H_RATES, H_NKEYS, H_KEYS, H_KEYRATE, H_NPLANS, H_PLANWILD = range(7)
HEADER = 8
R_UNIT, R_FIRST, R_INC, R_FEE, R_NTIERS, R_TIERS, R_PRICES, R_WEEK, R_TZ, R_NBANDS = range(10)
RF = 10
NO_CHANGE = 1 << 40
# Transitions are tabulated over this range; later instants use the last offset.
TZ_FROM, TZ_TO = 0, int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
TZ_SHIFT = 16                                   # buckets of 65536 s (~18 h)
TZ_BUCKETS = ((TZ_TO - TZ_FROM) >> TZ_SHIFT) + 1


def _offset(zone: ZoneInfo, t: int) -> int:
    off = datetime.fromtimestamp(t, UTC).astimezone(zone).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


@lru_cache(maxsize=64)
def tz_transitions(name: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(offset before TZ_FROM, transition instants, offsets from them) found by probing zoneinfo
    every 12 hours and bisecting to the second (zoneinfo does not expose its transition list)."""
    zone = ZoneInfo(name)
    step = 12 * 3600
    first = prev = _offset(zone, TZ_FROM)
    at: list[int] = []
    offs: list[int] = []
    t = TZ_FROM
    while t < TZ_TO:
        nxt = t + step
        off = _offset(zone, nxt)
        if off != prev:
            lo, hi = t, nxt          # offset(lo) == prev, offset(hi) != prev
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == prev:
                    lo = mid
                else:
                    hi = mid
            at.append(hi)
            offs.append(off)
            prev = off
        t = nxt
    return first, tuple(at), tuple(offs)


def week_table(rate: Rate) -> np.ndarray:
    """Per local minute of the week: minutes to the next change of band code << 8 | band code."""
    codes = np.zeros(MINUTES_PER_WEEK, dtype=np.int64)
    for i, band in enumerate(rate.bands):
        codes[band_minutes(band)] = i + 1
    until = np.full(MINUTES_PER_WEEK, NO_CHANGE, dtype=np.int64)
    if (codes != codes[0]).any():
        # walk backwards twice around the week so the wrap from Sunday to Monday is seen
        dist = NO_CHANGE
        for k in range(2 * MINUTES_PER_WEEK - 1, -1, -1):
            m = k % MINUTES_PER_WEEK
            nxt = (m + 1) % MINUTES_PER_WEEK
            dist = 1 if codes[nxt] != codes[m] else dist + 1
            if k < MINUTES_PER_WEEK:
                until[m] = dist
    return (until << 8) | codes


@lru_cache(maxsize=64)
def _tz_block(name: str) -> np.ndarray:
    first, at, offs = tz_transitions(name)
    edges = TZ_FROM + (np.arange(TZ_BUCKETS, dtype=np.int64) << TZ_SHIFT)
    bucket = np.searchsorted(np.array(at, dtype=np.int64), edges, side="right") - 1
    return np.concatenate([np.array([len(at), first, *at, *offs], dtype=np.int64), bucket])


def compile_tariff(tariff: Tariff) -> tuple[np.ndarray, dict[str, int]]:
    """The blob for a tariff, and the plan name -> plan index map the batch kernel uses."""
    plan_index = {name: i for i, name in enumerate(tariff.plans)}
    n = len(tariff.rates)
    keyed = sorted((plan_index[r.plan] << 32 | r.rating_group, r.index)
                   for r in tariff.rates if r.rating_group != WILDCARD)
    wild = [-1] * len(plan_index)
    for r in tariff.rates:
        if r.rating_group == WILDCARD:
            wild[plan_index[r.plan]] = r.index

    parts: list[np.ndarray] = []
    pos = HEADER + n * RF

    def place(arr: np.ndarray | list[int]) -> int:
        nonlocal pos
        a = np.asarray(arr, dtype=np.int64)
        at = pos
        parts.append(a)
        pos += len(a)
        return at

    header = np.zeros(HEADER, dtype=np.int64)
    records = np.zeros(n * RF, dtype=np.int64)
    header[H_NRATES], header[H_RATES] = n, HEADER
    header[H_NKEYS] = len(keyed)
    header[H_KEYS] = place([k for k, _ in keyed])
    header[H_KEYRATE] = place([r for _, r in keyed])
    header[H_NPLANS] = len(plan_index)
    header[H_PLANWILD] = place(wild)
    zones: dict[str, int] = {}
    for r in tariff.rates:
        rec = records[r.index * RF:(r.index + 1) * RF]
        tz = tariff.plans[r.plan].timezone
        if tz not in zones:
            zones[tz] = place(_tz_block(tz))
        rec[R_UNIT] = UNIT_CODES[r.unit]
        rec[R_FIRST], rec[R_INC], rec[R_FEE] = r.first_increment, r.increment, r.connect_fee
        rec[R_NTIERS] = 1 + len(r.tiers)
        rec[R_TIERS] = place([0] + [t.start for t in r.tiers])
        rec[R_PRICES] = place([p for row in r.price_grid() for p in row])
        rec[R_WEEK] = place(week_table(r)) if r.bands else -1
        rec[R_TZ] = zones[tz]
        rec[R_NBANDS] = len(r.bands)
    blob = np.concatenate([header, records, *parts]) if parts else np.concatenate([header, records])
    return np.ascontiguousarray(blob), plan_index
