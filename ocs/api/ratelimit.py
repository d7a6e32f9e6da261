"""A token bucket per API key: `rate` requests a second, bursts of `burst`; 0 turns it off."""

from __future__ import annotations

import time


class RateLimiter:
    MAX_KEYS = 100_000  # buckets kept; the least recently used go first beyond it

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: bytes) -> float:
        """0 when the request may go; else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_KEYS:
            del self._buckets[next(iter(self._buckets))]
        return 0.0
