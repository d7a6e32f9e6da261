"""The latency histogram: exact below 2*SUB, within 1/SUB above, mergeable, serialisable."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.histogram import MAX_VALUE, SIZE, SUB, Histogram, bucket_bounds, bucket_index


def test_buckets_tile_the_value_range_without_gaps():
    prev_hi = -1
    for i in range(SIZE):
        lo, hi = bucket_bounds(i)
        assert lo == prev_hi + 1
        assert bucket_index(lo) == i and bucket_index(hi) == i
        prev_hi = hi
    assert prev_hi >= MAX_VALUE


def test_percentiles_of_1_to_10000_are_the_known_order_statistics():
    h = Histogram()
    for v in range(1, 10_001):
        h.record(v)
    # true p50 = 5000, p90 = 9000, p99 = 9900, p99.9 = 9990: reported value is the bucket's top,
    # at most 1/SUB above the truth and never below it
    for q, truth in ((50, 5000), (90, 9000), (99, 9900), (99.9, 9990)):
        got = h.percentile(q)
        assert truth <= got <= truth * (1 + 1 / SUB), (q, got)
    assert h.percentile(100) == 10_000 and h.min == 1 and h.max == 10_000
    assert h.mean() == 5000.5


def test_small_values_are_exact():
    h = Histogram()
    for v in [3, 3, 3, 7, 200]:
        h.record(v)
    assert h.percentile(50) == 3
    assert h.percentile(80) == 7
    assert h.percentile(99.9) == 200


def test_empty_and_clamped():
    h = Histogram()
    assert h.percentile(99) == 0 and h.summary()["count"] == 0
    h.record(MAX_VALUE * 4)
    h.record(-5)
    assert h.max == MAX_VALUE * 4           # exact max kept apart from the clamped bucket
    assert h.min == 0
    assert h.percentile(100) == MAX_VALUE * 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=300),
       st.sampled_from([50, 90, 99, 99.9]))
def test_percentile_within_relative_error_of_the_sorted_truth(values, q):
    h = Histogram()
    for v in values:
        h.record(v)
    truth = sorted(values)[max(1, math.ceil(q / 100 * len(values))) - 1]
    got = h.percentile(q)
    assert truth <= got <= max(truth, truth + truth // SUB)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**7), max_size=100),
       st.lists(st.integers(min_value=0, max_value=10**7), max_size=100))
def test_merge_equals_recording_everything_and_dict_round_trips(a, b):
    ha, hb, hall = Histogram(), Histogram(), Histogram()
    for v in a:
        ha.record(v)
        hall.record(v)
    for v in b:
        hb.record(v)
        hall.record(v)
    ha.merge(hb)
    assert ha.counts == hall.counts
    assert (ha.count, ha.total, ha.max) == (hall.count, hall.total, hall.max)
    if hall.count:
        assert ha.min == hall.min
    back = Histogram.from_dict(ha.to_dict())
    assert back.counts == ha.counts and back.summary() == ha.summary()
