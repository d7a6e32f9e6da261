"""The server export's failures as a state: one line when the export starts failing, one when it works
again, nothing per second between (an outside run logged a traceback a second for a whole full-disk
episode). A failure that is not a write failure is a bug: logged with its traceback, but once per
distinct error, not once a second forever.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from balance.errors import is_write_failure


def _signature(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


@dataclass(slots=True)
class ExportHealth:
    log: logging.Logger
    since: float | None = None        # monotonic start of the failing episode
    attempts: int = 0                 # failed runs in this episode
    error: str = ""
    episodes: int = 0
    _bugs_logged: set[str] = field(default_factory=set)

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """A run raised `exc`; call from an except block (a bug's traceback comes from there)."""
        if self.since is None:
            self.since = time.monotonic()
            self.attempts = 0
            self.episodes += 1
            self.error = str(exc)
            if is_write_failure(exc):
                self.log.error("CDR export cannot write (%s): the CDRs wait in the store, retried "
                               "every second; the unsealed file is rewritten from the checkpoint",
                               exc)
        self.attempts += 1
        if not is_write_failure(exc):
            sig = _signature(exc)
            if sig not in self._bugs_logged:
                self._bugs_logged.add(sig)
                self.log.exception("CDR export failed (logged once per distinct error)")

    def ok(self) -> None:
        if self.since is None:
            return
        took = time.monotonic() - self.since
        self.log.warning("CDR export works again after %.1f s and %d failed attempts (%s)",
                         took, self.attempts, self.error)
        self.since = None
