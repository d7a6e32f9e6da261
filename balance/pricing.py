"""How balance ops price units: the Pricing interface, and its two plain implementations.

A grant after a usage report is priced from where the report left the burst's cumulative count
(45 s + 130 s at 60/60 is 3 increments, not 4). The op itself knows how many units it just
settled with money, so it passes that count in: `settled` is an explicit argument, never state
the pricing object keeps, so an answer cannot depend on the order the op asks its questions in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from balance.errors import InvalidArgument

Price = Callable[[int], int]  # money for n units, a plain function of n


class Pricing(Protocol):
    """Money for units of one (session, rating group) rated after `settled` units that the same
    op already paid with money (0 for the first units an op prices)."""

    def cost(self, settled: int, n: int) -> int:
        """Micro-units owed for the n units after `settled`."""
        ...

    def afford(self, settled: int, budget: int) -> int:
        """The most units after `settled` that `budget` micro-units pay for."""
        ...


@dataclass(slots=True, frozen=True)
class PriceFn:
    """Pricing from plain functions of the units alone, for callers whose price does not depend
    on what was settled before (a per-unit price, a flat fee): `settled` is ignored."""

    price: Price
    most: Price | None = None  # units a budget pays for; needed only where a grant may be cut

    def cost(self, settled: int, n: int) -> int:
        return self.price(n)

    def afford(self, settled: int, budget: int) -> int:
        if self.most is None:
            raise InvalidArgument("a grant that may be cut short needs an afford function")
        return self.most(budget)


@dataclass(slots=True, frozen=True)
class Money:
    """Units that are money themselves: n micro-units cost n."""

    def cost(self, settled: int, n: int) -> int:
        return n

    def afford(self, settled: int, budget: int) -> int:
        return budget


MONEY = Money()


def pricing_of(price: Pricing | Price, afford: Price | None = None) -> Pricing:
    """The op's Pricing: `price` itself, or plain functions wrapped in PriceFn."""
    if callable(price):
        return PriceFn(price, afford)
    if afford is not None:
        raise InvalidArgument("afford goes with a price function; a Pricing answers it itself")
    return price
