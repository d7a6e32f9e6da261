"""The tariff versions a charging process rates with: compiled once, new versions followed."""

from __future__ import annotations

import threading
import time

from rating.store import TariffStore


class Raters:
    """Tariff versions by number, compiled once; `current` follows new versions within a second."""

    def __init__(self, tariffs: TariffStore) -> None:
        self.tariffs = tariffs
        self._by_version: dict[int, object] = {}
        self._current = None
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        current = self.tariffs.current(int(time.time()))
        with self._lock:
            self._current = current
            if current is not None:
                self._by_version.setdefault(current.version, current)

    def __call__(self, version: int | None):  # type: ignore[no-untyped-def]
        if version is None:
            return self._current
        rater = self._by_version.get(version)
        if rater is None:
            rater = self.tariffs.get(version)
            with self._lock:
                self._by_version[version] = rater
        return rater
