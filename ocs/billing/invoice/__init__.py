"""Offline invoicing: period usage from exported CDRs, plan fees/discounts/tax, one rounding rule,
gap-free numbers, JSON/HTML/PDF documents and an ERP summary CSV."""

from ocs.billing.invoice.lines import AccountPeriod, Invoice, Line, UsageGroup, build_invoice
from ocs.billing.invoice.period import Period, PeriodError
from ocs.billing.invoice.rounding import RULE, round_minor
from ocs.billing.invoice.run import RunResult, run

__all__ = ["RULE", "AccountPeriod", "Invoice", "Line", "Period", "PeriodError", "RunResult",
           "UsageGroup", "build_invoice", "round_minor", "run"]
