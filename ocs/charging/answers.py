"""Shaping a CCA: its header fields, the message-level result from the services' ones, the AVP an
error names, the single-service form, and the Final-Unit-Indication of a last grant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocs.charging.service_units import MAX_REPORT_UNITS, NO_RATING_GROUP
from ocs.charging.services import mscc_list
from ocs.charging.settings import ChargingSettings
from protocol import build as B
from protocol import constants as C
from protocol.records import CCA, CCR, FinalUnit, MSCCAnswer
from protocol.units import encode_units

if TYPE_CHECKING:
    from rating.rater import Rater


def make_cca(ccr: CCR, cfg: ChargingSettings, result: int, mscc: list[MSCCAnswer] | None = None,
             **extra: Any) -> CCA:
    return CCA(session_id=ccr.session_id, result_code=result, origin_host=cfg.origin_host,
               origin_realm=cfg.origin_realm, request_type=ccr.request_type,
               request_number=ccr.request_number, auth_application_id=C.APP_CREDIT_CONTROL,
               mscc=mscc or [], **extra)


def answer_gone(ccr: CCR, cfg: ChargingSettings) -> CCA:
    return make_cca(ccr, cfg, C.DIAMETER_UNABLE_TO_COMPLY,
                    error_message="duplicate of a request answered earlier; its answer is no longer held")


def message_result(answers: list[MSCCAnswer]) -> int:
    """2001 when any service succeeded; otherwise the common failure (RFC 8506 §8.2 spirit)."""
    # every answer built by the rules carries a result code (MSCCAnswer types it optional for decoding)
    codes = {a.result_code for a in answers if a.result_code is not None}
    if not codes or C.DIAMETER_SUCCESS in codes:
        return C.DIAMETER_SUCCESS
    if len(codes) == 1:
        return codes.pop()
    return C.DIAMETER_CREDIT_LIMIT_REACHED if C.DIAMETER_CREDIT_LIMIT_REACHED in codes else min(codes)


def failed_avp(result: int, answers: list[MSCCAnswer], ccr: CCR) -> bytes | None:
    """The AVP a message-level error names: for 5031 the Rating-Group that could not be rated
    (RFC 8506), for 5004 the first service-unit AVP over MAX_REPORT_UNITS."""
    if result == C.DIAMETER_RATING_FAILED:
        rg = next((a.rating_group for a in answers if a.result_code == C.DIAMETER_RATING_FAILED), None)
        return B.u32(432, rg if rg is not None else NO_RATING_GROUP)
    if result == C.DIAMETER_INVALID_AVP_VALUE:
        for m in mscc_list(ccr):
            for code, u in [(437, m.requested), *((446, x) for x in m.used)]:
                if u is not None and any((v or 0) > MAX_REPORT_UNITS for v in (
                        u.time, u.total_octets, u.input_octets, u.output_octets, u.service_specific_units)):
                    return B.group(code, encode_units(u))
    return None


def single_service(ccr: CCR, cca: CCA) -> CCA:
    """A request without MSCC (a single-service client) gets its grant at message level, with
    the grant's Validity-Time and, on the last grant, its Final-Unit-Indication (RFC 8506:
    the CCA's own [Final-Unit-Indication] and [Validity-Time])."""
    if not ccr.mscc and len(cca.mscc) == 1:
        m = cca.mscc[0]
        cca.granted, cca.validity_time = m.granted, m.validity_time
        if m.final_unit_action is not None:
            cca.final_unit = FinalUnit(m.final_unit_action, m.redirect_address_type,
                                       m.redirect_server_address, m.restriction_filter_rules,
                                       m.filter_ids)
        cca.mscc = []
    return cca


def final_unit(ans: MSCCAnswer, rater: Rater | None, plan_name: str) -> None:
    """The last grant the balance allows: tell the gateway what to do when it is used up."""
    plan = rater.tariff.plans.get(plan_name) if rater is not None else None
    action = plan.final_unit_action if plan is not None else C.FinalUnitAction.TERMINATE
    ans.final_unit_action = action or 0
    if plan is None:
        return
    if action == C.FinalUnitAction.REDIRECT:
        ans.redirect_address_type = C.RedirectAddressType.URL
        ans.redirect_server_address = plan.redirect_address or ""
    elif action == C.FinalUnitAction.RESTRICT_ACCESS:
        rule = plan.restriction_filter_rule
        if rule:
            ans.restriction_filter_rules = [rule]
