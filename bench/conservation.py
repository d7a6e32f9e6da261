"""Conservation: the money the server debited equals what the tariff says our traffic costs.

Expected charges are computed on the client's side with the same rating.Rater, from the usage it
reported in requests that were answered with success (rating is cumulative per session and rating
group, so a session costs cost(total units) however it was reported). A request whose answer never
came (timeout) may or may not have been debited: its possible cost is reported apart as
`uncertain`, and the check then passes if the difference lies within it.

Exact only for tariffs whose prices do not depend on the server's view of time or of the billing
period (bands, tiers): the bench tariff is flat; with another tariff the result says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bench.client import Usage

if TYPE_CHECKING:
    from rating.rater import Rater
    from rating.tariff import Rate


@dataclass(slots=True)
class Conservation:
    expected: int          # micro-units, from the tariff and the answered usage
    debited: int           # micro-units, sum over accounts of (balance before - balance after)
    uncertain: int         # micro-units the unanswered requests could add
    accounts_off: int      # accounts whose own debit differs from their expected charges
    exact_tariff: bool     # no bands / tiers: the check is exact
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        from balance.money import format_micro

        verdict = "OK" if self.ok else "MISMATCH"
        text = (f"conservation {verdict}: debited {format_micro(self.debited)}, expected "
                f"{format_micro(self.expected)} (difference {format_micro(self.debited - self.expected)}"
                f", unanswered requests could add up to {format_micro(self.uncertain)}; "
                f"{self.accounts_off} accounts off)")
        if not self.exact_tariff:
            text += " [tariff has bands or tiers: expected figure is approximate]"
        return text


def expected_charges(usage: list[Usage], rater: Rater, accounts: int,
                     plan: str = "default") -> tuple[list[int], list[int]]:
    """(expected, uncertain) micro-units per account index."""
    expected = [0] * accounts
    uncertain = [0] * accounts
    rates: dict[int, Rate] = {}
    for u in usage:
        rate = rates.get(u.rating_group)
        if rate is None:
            rate = rater.find(plan, u.rating_group)
            if rate is None:
                continue            # the server answered 5031; nothing was charged
            rates[u.rating_group] = rate
        cost = rater.cost(rate, 0, u.units, u.start) if u.units else 0
        expected[u.account] += cost
        if u.uncertain:
            uncertain[u.account] += rater.cost(rate, 0, u.units + u.uncertain, u.start) - cost
    return expected, uncertain


def check(before: list[int], after: list[int], usage: list[Usage], rater: Rater,
          plan: str = "default") -> Conservation:
    expected, uncertain = expected_charges(usage, rater, len(before), plan)
    off = 0
    for b, a, e, u in zip(before, after, expected, uncertain, strict=True):
        d = b - a
        if not (e <= d <= e + u):
            off += 1
    debited = sum(before) - sum(after)
    exp, unc = sum(expected), sum(uncertain)
    exact = all(r.simple for r in rater.tariff.rates)
    return Conservation(exp, debited, unc, off, exact, off == 0 and exp <= debited <= exp + unc)
