"""The CDR record, its column list, and the text form of its values in exported files.

A CDR is written in the same write transaction as the final debit of a (session, rating group) or of
an EVENT, so a durable debit always has its CDR (ocs.billing.cdr.layout). Every other form of it
follows COLUMNS: the stored msgpack list, the file columns, the rows of `ocs cdr show`.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from balance.money import format_micro, to_micro


@dataclass(slots=True)
class CDR:
    cdr_id: int
    session_id: str
    account_id: str
    subscription_id: str
    plan: str
    rating_group: int
    service_identifier: int | None
    unit: str                 # seconds | octets | events | money
    used_units: int           # all units used, bundles included
    amount: int               # micro-units of money debited (what bundles covered costs 0)
    currency: str
    tariff_version: int
    start_time: int           # unix seconds, UTC
    end_time: int
    termination_cause: str    # NORMAL | EVENT | REFUND | STALE | CREDIT_LIMIT | ...
    origin_host: str
    bundle_units: int = 0     # of used_units, how many a bundle paid for
    request_type: str = "SESSION"  # SESSION | EVENT


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CDR))
AMOUNT = COLUMNS.index("amount")
START = COLUMNS.index("start_time")
END = COLUMNS.index("end_time")
SERVICE = COLUMNS.index("service_identifier")
INT_COLUMNS = frozenset({"cdr_id", "rating_group", "used_units", "tariff_version", "bundle_units"})
_EPOCH = date(1970, 1, 1)


@lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).isoformat()


def iso(ts: int) -> str:
    """Unix seconds as 'YYYY-MM-DDTHH:MM:SSZ', without a datetime per call (the day part is cached:
    the export formats two per row)."""
    days, secs = divmod(ts, 86400)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return f"{_day(days)}T{h:02d}:{m:02d}:{s:02d}Z"


@lru_cache(maxsize=4096)
def _days_of(day: str) -> int:
    return (date.fromisoformat(day) - _EPOCH).days


def parse_iso(text: str) -> int:
    """Unix seconds from an ISO 8601 time: the 'YYYY-MM-DDTHH:MM:SSZ' form we write on a fast path,
    any other form only with a zone (a time without one names no instant)."""
    if len(text) == 20 and text[10] == "T" and text[19] == "Z":
        return (_days_of(text[:10]) * 86400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60
                + int(text[17:19]))
    try:
        dt = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise ValueError(f"not an ISO 8601 UTC time: {text!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return int(dt.timestamp())


def parse_amount(text: str) -> int:
    """Micro-units from a decimal string, exactly: a fast path for the 6-decimal form we write, any
    other plain decimal through balance.money.to_micro (never rounded: more decimals are an error)."""
    neg = text.startswith("-")
    whole, dot, frac = text[neg:].partition(".")
    if whole.isdigit() and whole.isascii() and (not dot or (frac.isdigit() and frac.isascii())) \
            and len(frac) <= 6:
        value = int(whole) * 1_000_000 + (int(frac.ljust(6, "0")) if frac else 0)
        return -value if neg else value
    return to_micro(text)


def file_values(vals: list[Any]) -> list[Any]:
    """Stored values -> file values (amount as decimal string, times ISO 8601 UTC), in place: the
    export loop never builds a CDR object per record."""
    vals[AMOUNT] = format_micro(vals[AMOUNT])
    vals[START] = iso(vals[START])
    vals[END] = iso(vals[END])
    return vals


def to_row(cdr: CDR) -> dict[str, object]:
    """The file form: amounts as 6-decimal strings, times as ISO 8601 UTC, the rest as is."""
    return dict(zip(COLUMNS, file_values(list(astuple(cdr))), strict=True))
