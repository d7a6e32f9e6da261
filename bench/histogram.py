"""Latency histogram in the HDR style: log-linear buckets, bounded memory, mergeable.

Written here rather than taken from the `hdrhistogram` package because we need only record,
merge and percentile over integer microseconds, and a list of ints is quicker to merge and to
serialise to JSON than that package's encoded form.

Layout: values below 2*SUB are counted exactly; above, each power-of-two range [2^k, 2^(k+1)) is
split into SUB equal sub-buckets, so a reported percentile is within 1/SUB (0.8 %) of the true
value. Values above MAX_VALUE are clamped into the last bucket (the exact maximum is kept apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUB_BITS = 7
SUB = 1 << SUB_BITS                  # 128 sub-buckets per power of two
MAX_VALUE = (1 << 36) - 1            # ~19 hours in microseconds
_MAX_SHIFT = MAX_VALUE.bit_length() - (SUB_BITS + 1)
SIZE = (_MAX_SHIFT + 2) * SUB


def bucket_index(value: int) -> int:
    """Index of the bucket that counts `value` (clamped to [0, MAX_VALUE])."""
    if value < 2 * SUB:
        return value if value > 0 else 0
    if value > MAX_VALUE:
        value = MAX_VALUE
    shift = value.bit_length() - (SUB_BITS + 1)
    return shift * SUB + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Lowest and highest value counted by bucket `index`."""
    if index < 2 * SUB:
        return index, index
    shift = index // SUB - 1
    sub = index - shift * SUB
    return sub << shift, ((sub + 1) << shift) - 1


@dataclass(slots=True)
class Histogram:
    """Counts of integer values (we use microseconds) in log-linear buckets."""

    counts: list[int] = field(default_factory=lambda: [0] * SIZE)
    count: int = 0
    total: int = 0
    min: int = 0
    max: int = 0

    def record(self, value: int) -> None:
        if value < 0:
            value = 0
        if value < 2 * SUB:
            self.counts[value] += 1
        else:
            v = value if value <= MAX_VALUE else MAX_VALUE
            shift = v.bit_length() - (SUB_BITS + 1)
            self.counts[shift * SUB + (v >> shift)] += 1
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += 1
        self.total += value

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def percentile(self, q: float) -> int:
        """Smallest bucket upper bound at or below which q % of the values lie (0 when empty).

        Like HdrHistogram's "highest equivalent value", but never above the exact maximum.
        """
        if self.count == 0:
            return 0
        if q >= 100:
            return self.max
        rank = max(1, -(-int(q * self.count * 1_000_000) // 100_000_000))  # ceil, no float drift
        seen = 0
        for i, c in enumerate(self.counts):
            if c:
                seen += c
                if seen >= rank:
                    return min(bucket_bounds(i)[1], self.max)
        return self.max

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self) -> dict[str, float | int]:
        """The figures we report, in microseconds."""
        return {"count": self.count, "min": self.min if self.count else 0,
                "mean": round(self.mean(), 1), "p50": self.percentile(50),
                "p90": self.percentile(90), "p99": self.percentile(99),
                "p99_9": self.percentile(99.9), "max": self.max}

    def to_dict(self) -> dict[str, object]:
        """Sparse form for JSON files and for passing between processes."""
        return {"sub_bits": SUB_BITS, "count": self.count, "total": self.total, "min": self.min,
                "max": self.max, "buckets": {str(i): c for i, c in enumerate(self.counts) if c}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        if data.get("sub_bits") != SUB_BITS:
            raise ValueError(f"histogram with sub_bits={data.get('sub_bits')}, want {SUB_BITS}")
        h = cls(count=int(data["count"]), total=int(data["total"]), min=int(data["min"]),
                max=int(data["max"]))
        for i, c in data["buckets"].items():
            h.counts[int(i)] = int(c)
        return h
