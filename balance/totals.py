"""Running totals over all accounts, kept up to date from the journal instead of by scanning."""

from __future__ import annotations

from dataclasses import dataclass

from balance.views import View


@dataclass(slots=True)
class ReservedTotal:
    """Money held by all accounts' reservations (the server's gauge). One scan of the accounts at
    the start, then only the journal entries written since: every change of an account's reserved
    amount has its reserved_delta in the journal (reconcile checks they add up), so the cost
    follows the traffic, not the number of subscribers."""
    total: int = 0
    position: int = -1  # the last journal entry counted; -1 before the first scan

    def update(self, view: View) -> int:
        if self.position < 0:
            self.position = view.journal_end()  # the same snapshot as the scan
            self.total = sum(a.reserved for a in view.accounts())
            return self.total
        for entry in view.journal(self.position):
            self.total += entry.reserved_delta
            self.position = entry.position
        return self.total
