"""The tariff versions a charging process rates with: compiled once, changes followed per batch."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from rating.tariff_store import TariffStore

if TYPE_CHECKING:
    from rating.rater import Rater
    from rating.tariff import Rate

log = logging.getLogger("ocs.tariffs")


class Raters:
    """Tariff versions by number, compiled once; `current` is the version in force now.

    `refresh()` runs before every batch: a version loaded or retired by a command that has
    returned is in force for every request after it (one read of the change count per batch,
    the schedule re-read only when it moved)."""

    def __init__(self, tariffs: TariffStore) -> None:
        self.tariffs = tariffs
        self._by_version: dict[int, Rater] = {}
        self._current: Rater | None = None
        self._lock = threading.Lock()
        self._changes = -1
        self._next_start: int | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the schedule only when the change count moved or a scheduled start passed."""
        now = int(time.time())
        changes = self.tariffs.changes()
        if changes == self._changes and (self._next_start is None or now < self._next_start):
            return
        current = self.tariffs.current(now)
        self._changes = changes
        self._next_start = self.tariffs.next_change_after(now)
        with self._lock:
            before, self._current = self._current, current
            if current is not None:
                self._by_version.setdefault(current.version, current)
        if current is not before:
            _log_change(before, current)

    def __call__(self, version: int | None) -> Rater | None:
        if version is None:
            return self._current
        rater = self._by_version.get(version)
        if rater is None:
            rater = self.tariffs.get(version)
            with self._lock:
                self._by_version[version] = rater
        return rater


def _log_change(before: Rater | None, current: Rater | None) -> None:
    if current is None:
        log.warning("no tariff version is in force: every new session gets 5031 "
                    "DIAMETER_RATING_FAILED until one is loaded")
    elif before is None or before.version != current.version:
        log.info("tariff version %d takes effect for new sessions%s", current.version,
                 "" if before is None else f" (was version {before.version})")


def find_rate(rater: Rater | None, plan: str, currency: str, rg: int) -> Rate | None:
    """The rate for (plan, rating group), or None (5031): also when the tariff's prices are in
    another currency than the account's (EUR micro-prices are not JPY ones)."""
    if rater is None or rater.currency != currency:
        return None
    return rater.find(plan, rg)
