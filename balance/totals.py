"""Running totals over all accounts, kept up to date from the journal instead of by scanning, and
the account status changes seen on the way (the server logs them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from balance.views import View


@dataclass(slots=True)
class ReservedTotal:
    """Money held by all accounts' reservations (the server's gauge). One scan of the accounts at
    the start, then only the journal entries written since: every change of an account's reserved
    amount has its reserved_delta in the journal (reconcile checks they add up), so the cost
    follows the traffic, not the number of subscribers."""
    total: int = 0
    position: int = -1  # the last journal entry counted; -1 before the first scan
    # (account id, new status) of the status entries passed since the caller last took them
    status_changes: list[tuple[str, str]] = field(default_factory=list)

    def update(self, view: View) -> int:
        if self.position < 0:
            self.position = view.journal_end()  # the same snapshot as the scan
            self.total = sum(a.reserved for a in view.accounts())
            return self.total
        for entry in view.journal(self.position):
            self.total += entry.reserved_delta
            self.position = entry.position
            if entry.kind == "status":
                self.status_changes.append((entry.account_id, entry.reason))
        return self.total

    def take_status_changes(self) -> list[tuple[str, str]]:
        out, self.status_changes = self.status_changes, []
        return out
