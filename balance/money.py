"""Money at the edges: decimal strings in and out, integer micro-units (1e-6) everywhere inside."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICRO = 1_000_000
MAX_MICRO = 1 << 60  # ~1.15e12 currency units: far beyond any account, far below int64
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

# ISO 4217 minor units for the currencies we meet; others default to 2.
MINOR_UNITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "OMR": 3, "TND": 3, "JOD": 3}
# ISO 4217 numeric codes (Currency-Code AVP 425 carries these).
NUMERIC_CODES = {
    "EUR": 978, "USD": 840, "GBP": 826, "CHF": 756, "JPY": 392, "SEK": 752, "NOK": 578,
    "DKK": 208, "PLN": 985, "CZK": 203, "HUF": 348, "RON": 946, "BGN": 975, "CAD": 124,
    "AUD": 36, "NZD": 554, "INR": 356, "CNY": 156, "BRL": 986, "ZAR": 710, "KRW": 410,
    "TRY": 949, "MXN": 484, "SGD": 702, "HKD": 344, "BHD": 48, "KWD": 414, "OMR": 512,
    "TND": 788, "JOD": 400, "ISK": 352, "CLP": 152,
}


class MoneyError(ValueError):
    """A decimal amount that cannot be represented exactly in micro-units."""


def to_micro(text: str | int | Decimal, *, allow_negative: bool = True) -> int:
    """Parse a decimal string ("12.5", "-0.000001") into integer micro-units, exactly or not at all.

    Only plain ASCII decimals: Decimal() alone also takes "1_000", "1e30" and other scripts' digits.
    At most MAX_MICRO in size, so every amount and sum of a few fits the store's int64 fields."""
    if isinstance(text, bool):
        raise MoneyError(f"not an amount: {text!r}")
    if isinstance(text, int | Decimal):
        value = Decimal(text)
    else:
        raw = str(text).strip()
        if not _DECIMAL.fullmatch(raw):
            raise MoneyError(f"not a decimal amount: {text!r}")
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise MoneyError(f"not a decimal amount: {text!r}") from None
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {text!r}")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise MoneyError(f"more than 6 decimals: {text!r}")
    if not allow_negative and micro < 0:
        raise MoneyError(f"negative amount: {text!r}")
    if abs(micro) > MAX_MICRO:
        raise MoneyError(f"amount too large: {text!r} (at most {MAX_MICRO // MICRO:,})")
    return int(micro)


def format_micro(amount: int, decimals: int = 6) -> str:
    """Render micro-units as a decimal string with `decimals` places (6 = exact)."""
    if decimals == 6:
        sign = "-" if amount < 0 else ""
        q, r = divmod(abs(amount), MICRO)
        return f"{sign}{q}.{r:06d}"
    return str((Decimal(amount) / MICRO).quantize(Decimal(1).scaleb(-decimals)))


def currency_numeric(code: str) -> int:
    """ISO 4217 numeric code for Currency-Code; 0 when we do not know it."""
    return NUMERIC_CODES.get(code.upper(), 0)
