"""The one rounding rule of invoices: micro-units to the currency's minor unit, half-even, per line.

Rule (printed on every invoice): each line's exact amount is rounded half-even (banker's rounding)
to the minor unit of the currency (cents for EUR); the net is the sum of the rounded lines; the tax is
the plan's rate times that net, rounded the same way; the total is net + tax. So every figure on the
invoice adds up to the cent. The rounding difference shown is total minus the exact total (the exact
lines plus the exact tax on them), in micro-units.
"""

from __future__ import annotations

from fractions import Fraction

from balance.money import MICRO, MINOR_UNITS

RULE = ("Each line is rounded half-even to the currency's minor unit; net = sum of rounded lines; "
        "tax = tax rate x net, rounded half-even; total = net + tax. The rounding difference is "
        "total minus the exact (unrounded) total.")


def minor_units(currency: str) -> int:
    return MINOR_UNITS.get(currency.upper(), 2)


def _half_even(x: Fraction) -> int:
    """Nearest integer, ties to even (Python's round on Fraction is exactly that)."""
    return round(x)


def round_minor(micro: int | Fraction, currency: str) -> int:
    """Micro-units rounded half-even to the minor unit, still in micro-units."""
    step: int = MICRO // 10 ** minor_units(currency)  # int ** int is typed Any (a negative power is a float)
    return _half_even(Fraction(micro) / step) * step


def round_micro(x: Fraction) -> int:
    return _half_even(x)
