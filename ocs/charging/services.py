"""The services a CCR reports on and asks for: its MSCCs, one per rating group."""

from __future__ import annotations

from ocs.charging.service_units import NO_RATING_GROUP
from protocol import constants as C
from protocol.records import CCR, MSCCRequest


def mscc_list(ccr: CCR) -> list[MSCCRequest]:
    """The MSCCs, or one synthesised from top-level RSU/USU when a client sends none (RFC 4006 single-service)."""
    if ccr.mscc:
        return ccr.mscc
    if ccr.requested is None and not ccr.used:
        return []
    return [MSCCRequest(rating_group=None,
                        service_identifiers=[ccr.service_identifier] if ccr.service_identifier is not None else [],
                        requested=ccr.requested, used=list(ccr.used), reporting_reason=None)]


def by_rating_group(items: list[MSCCRequest]) -> list[tuple[MSCCRequest, int | None]]:
    """MSCCs with a rating group seen earlier in the request are folded into the first one
    (usage summed, first RSU kept): a rating group has one quota and one reservation. Returns
    (MSCC to process, None) or (MSCC, index of the answer it was folded into). Never mutates the
    request (ops may run twice)."""
    out: list[tuple[MSCCRequest, int | None]] = []
    first: dict[int, int] = {}
    for m in items:
        rg = m.rating_group if m.rating_group is not None else NO_RATING_GROUP  # as grants keys it
        i = first.get(rg)
        if i is None:
            first[rg] = len(out)
            out.append((m, None))
            continue
        head = out[i][0]
        out[i] = (MSCCRequest(rating_group=head.rating_group, service_identifiers=head.service_identifiers,
                              requested=head.requested if head.requested is not None else m.requested,
                              used=head.used + m.used,
                              reporting_reason=_merged_reason(head.reporting_reason, m.reporting_reason)),
                  None)
        out.append((m, i))
    return out


def _merged_reason(a: int | None, b: int | None) -> int | None:
    """One Reporting-Reason for MSCCs folded together: FINAL if either says so (whether it closes
    the rating group is decided by grants.answer_mscc, which keeps it open while one of them asks
    for quota)."""
    if C.ReportingReason.FINAL in (a, b):
        return C.ReportingReason.FINAL
    return a if a is not None else b
