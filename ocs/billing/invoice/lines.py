"""Invoice lines from one account's period: recurring fee, usage, adjustments, discount, tax, total.

Pure: no store, no files. The figures follow ocs.billing.invoice.rounding.RULE. Usage amounts are what the
CDRs say was debited (so an invoice equals the money the OCS actually took, bundles included at 0);
the recurring fee is pro-rated by whole UTC days the account existed in the period (created on day d
of an N-day month: fee x (N - d + 1) / N; closed on day c: up to and including day c).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from balance.money import MICRO, format_micro
from ocs.billing.invoice.period import Period
from ocs.billing.invoice.rounding import RULE, minor_units, round_micro, round_minor

# unit -> (human unit, units per human unit, service label)
HUMAN = {"seconds": ("min", 60, "Voice"), "octets": ("MB", 1_000_000, "Data"),
         "events": ("SMS", 1, "Messaging"), "money": ("", 1, "Service")}


@dataclass(slots=True)
class UsageGroup:
    rating_group: int
    service_identifier: int | None
    unit: str
    count: int = 0            # CDRs
    units: int = 0            # used units, bundles included
    bundle_units: int = 0
    amount: int = 0           # micro-units debited


@dataclass(slots=True)
class Adjustment:
    ts: int
    reason: str
    delta: int                # ledger delta on the balance: > 0 credits the customer


@dataclass(slots=True)
class AccountPeriod:
    """Everything invoicing needs to know about one account in one period."""
    account_id: str
    currency: str
    plan_name: str
    created: int
    closed_at: int | None = None
    usage: list[UsageGroup] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)


@dataclass(slots=True)
class Line:
    kind: str                 # recurring | usage | adjustment | discount
    description: str
    exact: Fraction           # micro-units, unrounded
    amount: int               # micro-units, rounded to the minor unit
    quantity: str = ""
    unit: str = ""
    rating_group: int | None = None
    service_identifier: int | None = None
    count: int | None = None


@dataclass(slots=True)
class Invoice:
    number: str
    period: Period
    account_id: str
    plan: str
    currency: str
    tariff_version: int | None
    lines: list[Line]
    net: int
    tax_rate_ppm: int
    tax: int
    total: int
    exact_total: Fraction

    @property
    def rounding_difference(self) -> int:
        return round_micro(self.total - self.exact_total)

    def money(self, micro: int) -> str:
        return format_micro(micro, minor_units(self.currency))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (amounts as decimal strings in the minor unit, exact ones to 6 places)."""
        return {
            "number": self.number, "period": self.period.label,
            "period_start": self.period.first_day.isoformat(),
            "period_end": self.period.last_day.isoformat(),
            "issue_date": self.period.last_day.isoformat(),
            "account_id": self.account_id, "plan": self.plan, "currency": self.currency,
            "tariff_version": self.tariff_version,
            "lines": [{
                "kind": ln.kind, "description": ln.description, "rating_group": ln.rating_group,
                "service_identifier": ln.service_identifier, "count": ln.count,
                "quantity": ln.quantity, "unit": ln.unit, "amount": self.money(ln.amount),
                "exact_amount": format_micro(round_micro(ln.exact))} for ln in self.lines],
            "net": self.money(self.net), "tax_rate": format_ppm(self.tax_rate_ppm),
            "tax": self.money(self.tax), "total": self.money(self.total),
            "exact_total": format_micro(round_micro(self.exact_total)),
            "rounding_difference": format_micro(self.rounding_difference),
            "rounding_rule": RULE,
        }


def format_ppm(ppm: int) -> str:
    """Parts per million as a plain decimal: 200000 -> '0.2'."""
    s = format_micro(ppm)
    return s.rstrip("0").rstrip(".") if "." in s else s


def human_quantity(unit: str, units: int) -> tuple[str, str]:
    name, per, _ = HUMAN.get(unit, (unit, 1, unit))
    if per == 1:
        return str(units), name
    q = round(Fraction(units, per) * 100)          # half-even to 2 decimals
    return f"{q // 100}.{q % 100:02d}", name


def recurring_fraction(acct: AccountPeriod, period: Period) -> Fraction:
    """Share of the period's days the account existed (0..1), by whole UTC days."""
    if acct.created >= period.end or (acct.closed_at is not None and acct.closed_at < period.start):
        return Fraction(0)
    first = 1 if acct.created < period.start else period.day_of(acct.created)
    last = period.days
    if acct.closed_at is not None and acct.closed_at < period.end:
        last = period.day_of(acct.closed_at)
    return Fraction(max(0, last - first + 1), period.days)


def build_invoice(acct: AccountPeriod, period: Period, plan: Any, number: str,
                  tariff_version: int | None = None) -> Invoice:
    """The invoice of one account; `plan` is a rating.tariff.Plan or None (no fee, tax, discount)."""
    cur = acct.currency
    lines: list[Line] = []

    def add(kind: str, description: str, exact: Fraction | int, **kw: Any) -> None:
        ex = Fraction(exact)
        lines.append(Line(kind, description, ex, round_minor(ex, cur), **kw))

    fee = plan.recurring_fee if plan is not None else 0
    share = recurring_fraction(acct, period)
    if fee and share:
        days = share * period.days
        text = f"Monthly fee, plan {acct.plan_name}"
        if share != 1:
            text += f" (pro rata {days}/{period.days} days)"
        add("recurring", text, fee * share, quantity=str(days), unit="days")

    usage_total = 0
    for g in sorted(acct.usage, key=lambda g: (g.rating_group, g.service_identifier or -1, g.unit)):
        qty, hunit = human_quantity(g.unit, g.units)
        label = HUMAN.get(g.unit, ("", 1, g.unit))[2]
        text = f"{label}, rating group {g.rating_group}"
        if g.service_identifier is not None:
            text += f", service {g.service_identifier}"
        if g.bundle_units:
            bq, _ = human_quantity(g.unit, g.bundle_units)
            text += f" ({bq} {hunit} from bundles)"
        add("usage", text, g.amount, quantity=qty, unit=hunit, rating_group=g.rating_group,
            service_identifier=g.service_identifier, count=g.count)
        usage_total += g.amount

    for a in sorted(acct.adjustments, key=lambda a: a.ts):
        add("adjustment", a.reason or "adjustment", -a.delta)

    if plan is not None and plan.discounts and usage_total > 0:
        from rating.tariff import discount_amount
        off = discount_amount(plan, usage_total)
        if off:
            steps = ", ".join(f"{format_ppm(d.ppm * 100)}% above {format_micro(d.threshold, minor_units(cur))}"
                              for d in sorted(plan.discounts, key=lambda d: d.threshold))
            add("discount", f"Volume discount on usage ({steps})", -off)

    net = sum(ln.amount for ln in lines)
    exact_net = sum((ln.exact for ln in lines), Fraction(0))
    rate = plan.tax_rate if plan is not None else 0
    tax = round_minor(Fraction(net * rate, MICRO), cur)
    exact_total = exact_net + exact_net * Fraction(rate, MICRO)
    return Invoice(number, period, acct.account_id, acct.plan_name, cur, tariff_version, lines,
                   net, rate, tax, net + tax, exact_total)
