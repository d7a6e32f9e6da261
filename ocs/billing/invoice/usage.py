"""Usage of a period from exported CDR files, grouped per account and (rating group, service, unit).

A CDR belongs to the period holding its end_time (the instant of its final debit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ocs.billing.cdr.files import cdr_files, read_file
from ocs.billing.invoice.lines import UsageGroup
from ocs.billing.invoice.period import Period


@dataclass(slots=True)
class PeriodUsage:
    groups: dict[str, dict[tuple[int, int | None, str], UsageGroup]] = field(default_factory=dict)
    currency: dict[str, str] = field(default_factory=dict)
    plan: dict[str, str] = field(default_factory=dict)
    cdrs: int = 0
    files: int = 0


def collect(root: str | os.PathLike[str], period: Period) -> PeriodUsage:
    out = PeriodUsage()
    start, end = period.start, period.end
    for path in cdr_files(root):
        out.files += 1
        for c in read_file(path):
            if not start <= c.end_time < end:
                continue
            out.cdrs += 1
            acct = out.groups.get(c.account_id)
            if acct is None:
                acct = out.groups[c.account_id] = {}
                out.currency[c.account_id] = c.currency
                out.plan[c.account_id] = c.plan
            k = (c.rating_group, c.service_identifier, c.unit)
            g = acct.get(k)
            if g is None:
                g = acct[k] = UsageGroup(c.rating_group, c.service_identifier, c.unit)
            g.count += 1
            g.units += c.used_units
            g.bundle_units += c.bundle_units
            g.amount += c.amount
    return out
