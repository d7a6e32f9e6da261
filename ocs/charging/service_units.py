"""Service units as the rules read and grant them: one unit kind out of a Used/Requested-Service-
Unit, a Granted-Service-Unit of one kind, and the bounds past which a report is refused."""

from __future__ import annotations

from protocol.records import Units

UNIT_FIELD = {"seconds": "time", "octets": "total_octets", "events": "service_specific_units"}
NO_RATING_GROUP = 0  # what a CCR without a Rating-Group is rated as (a wildcard rate can take it)
# Bounds on reported units (8.9 million years of seconds, 281 TB of octets per report): past them a
# request is refused (5004) instead of priced, so the rating kernel's int64 sums cannot overflow
# (before + units + month usage < 2**58).
MAX_REPORT_UNITS = 1 << 48
MAX_SESSION_UNITS = 1 << 56


def units_of(u: Units | None, unit: str) -> int:
    """The amount of one unit kind in a service-unit AVP. Octets: the larger of CC-Total-Octets and
    input + output, so a report cannot shrink its usage by sending a small total beside them."""
    if u is None:
        return 0
    if unit == "octets":
        both = (u.input_octets or 0) + (u.output_octets or 0)
        return max(u.total_octets or 0, both)
    value: int | None = getattr(u, UNIT_FIELD[unit])
    return value or 0


def grant_units(unit: str, n: int) -> Units:
    u = Units()
    setattr(u, UNIT_FIELD[unit], n)
    return u
