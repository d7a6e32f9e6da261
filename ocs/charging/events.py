"""Event-based charging (CCR-EVENT, RFC 8506 §6.3 / §6.4 / §6.5): each service priced on its own
at the request's instant, then debited, refunded, checked or only priced, as Requested-Action says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from balance import ops
from balance.errors import InsufficientFunds
from balance.money import currency_numeric
from ocs.billing import cdr as cdrs
from ocs.charging.answers import failed_avp, make_cca, message_result, single_service
from ocs.charging.burst import BurstPricing
from ocs.charging.counters import add_period_usage, add_refundable, period_usage, refundable
from ocs.charging.service_units import MAX_REPORT_UNITS, NO_RATING_GROUP, grant_units, units_of
from ocs.charging.services import mscc_list
from ocs.charging.subscribers import resolve_account
from ocs.charging.tariffs import find_rate
from protocol import build as B
from protocol import constants as C
from protocol.records import CCA, CCR, CostInformation, MSCCAnswer, MSCCRequest

if TYPE_CHECKING:
    from balance.records import Account
    from balance.store import Tx
    from ocs.charging.context import Context
    from rating.rater import Rater
    from rating.tariff import Rate

DIRECT_DEBITING, REFUND_ACCOUNT, CHECK_BALANCE, PRICE_ENQUIRY = (int(a) for a in C.RequestedAction)


def answer_event(tx: Tx, ctx: Context, ccr: CCR) -> CCA:
    """Apply one CCR-EVENT and answer it; its session record is kept only for replays."""
    cfg = ctx.cfg
    account, sub = resolve_account(tx, ccr)
    if account is None:
        return make_cca(ccr, cfg, C.DIAMETER_USER_UNKNOWN)
    if account.status != "active":
        return make_cca(ccr, cfg, C.DIAMETER_END_USER_SERVICE_DENIED)
    action = ccr.requested_action if ccr.requested_action is not None else DIRECT_DEBITING
    rater = ctx.raters(None)
    items = mscc_list(ccr)
    if not items:
        return make_cca(ccr, cfg, C.DIAMETER_MISSING_AVP, error_message="no Requested-Service-Unit",
                        failed_avp=B.group(437, b""))  # RFC 6733 §7.5: an example of the missing AVP
    answers: list[MSCCAnswer] = []
    total_cost = 0
    enough = True
    for m in items:
        ans, cost, covered = _service(tx, ctx, ccr, account, sub, rater, m, action)
        answers.append(ans)
        total_cost += cost
        enough = enough and covered
    extra: dict[str, Any] = {}
    if action == CHECK_BALANCE:
        extra["check_balance_result"] = C.CheckBalanceResult.ENOUGH_CREDIT if enough else C.CheckBalanceResult.NO_CREDIT
    if action in (PRICE_ENQUIRY, DIRECT_DEBITING):
        extra["cost_information"] = CostInformation(value_digits=total_cost, exponent=-6,
                                                    currency_code=currency_numeric(account.currency),
                                                    cost_unit=None)
    if action in (PRICE_ENQUIRY, CHECK_BALANCE):
        for a in answers:  # an enquiry grants nothing (RFC 8506 §6.4, §6.5)
            a.granted = None
    result = message_result(answers)
    return single_service(ccr, make_cca(ccr, cfg, result, answers,
                                        failed_avp=failed_avp(result, answers, ccr), **extra))


def _service(tx: Tx, ctx: Context, ccr: CCR, account: Account, sub: str, rater: Rater | None,
             m: MSCCRequest, action: int) -> tuple[MSCCAnswer, int, bool]:
    """One service of the event: (its answer, the money it counts in Cost-Information, whether
    the balance covers it for CHECK_BALANCE)."""
    rg = m.rating_group if m.rating_group is not None else NO_RATING_GROUP
    sid = m.service_identifiers[0] if m.service_identifiers else None
    ans = MSCCAnswer(result_code=C.DIAMETER_SUCCESS, rating_group=m.rating_group, service_identifier=sid)
    rate = find_rate(rater, account.plan, account.currency, rg)
    if rate is None or rater is None:  # no rater finds no rate
        ans.result_code = C.DIAMETER_RATING_FAILED
        return ans, 0, True
    units = units_of(m.requested, rate.unit) or sum(units_of(u, rate.unit) for u in m.used)
    if units == 0 and rate.unit == "events":
        units = 1  # an SMS is one event even when the SMSC leaves the count out
    if not 0 < units <= MAX_REPORT_UNITS:  # nothing (or another unit kind, or absurdly much)
        ans.result_code = C.DIAMETER_INVALID_AVP_VALUE
        return ans, 0, True
    now = tx.now
    period_used = period_usage(tx, ctx, account.id, rg, rate)
    price = BurstPricing(rater, rate, 0, now, period_used)  # priced on its own (from 0) now
    cost = price.cost(0, units)
    if action == PRICE_ENQUIRY:
        return ans, cost, True
    if action == CHECK_BALANCE:
        return ans, cost, ops.covers(tx, account_id=account.id, rating_group=rg, unit=rate.unit,
                                     units=units, price=price)
    if action == REFUND_ACCOUNT:
        if cost > refundable(tx, ctx, account.id, rg):
            # More than this account's events of this rating group were charged in money
            # (bundle-paid events give no money back): refused, nothing credited.
            ans.result_code = C.DIAMETER_UNABLE_TO_COMPLY
            return ans, 0, True
        if cost > 0:
            ops.refund(tx, None, account_id=account.id, amount=cost,
                       session_id=ccr.session_id, rating_group=rg)
            add_refundable(tx, ctx, account.id, rg, -cost)
        _event_cdr(tx, ctx, ccr, account, sub, rg, sid, rate, units, -cost, 0, rater, "REFUND")
        ans.granted = grant_units(rate.unit, units)
        return ans, cost, True
    # DIRECT_DEBITING: all or nothing, bundles first
    try:
        ops.reserve(tx, None, account_id=account.id, session_id=ccr.session_id, rating_group=rg,
                    unit=rate.unit, units=units, price=price, all_or_nothing=True,
                    expires_at=now + ctx.cfg.timeout(), rate_ref=rater.version)
    except InsufficientFunds:
        ans.result_code = C.DIAMETER_CREDIT_LIMIT_REACHED
        return ans, 0, True
    res = ops.commit(tx, None, account_id=account.id, session_id=ccr.session_id, rating_group=rg,
                     used_units=units, price=price)
    if rate.tiers:
        add_period_usage(tx, ctx, account.id, rg, units)
    if res.from_balance:  # a refund gives back cash only where cash was taken
        add_refundable(tx, ctx, account.id, rg, res.from_balance)
    _event_cdr(tx, ctx, ccr, account, sub, rg, sid, rate, units, res.from_balance,
               res.bundle_units_used, rater, "EVENT")
    ans.granted = grant_units(rate.unit, units)
    return ans, res.money_debited, True


def _event_cdr(tx: Tx, ctx: Context, ccr: CCR, account: Account, sub: str, rg: int, sid: int | None,
               rate: Rate, units: int, amount: int, bundle_units: int, rater: Rater,
               cause: str) -> None:
    now = tx.now
    record = cdrs.CDR(0, ccr.session_id, account.id, sub, account.plan, rg, sid, rate.unit, units,
                      amount, account.currency, rater.version, now, now, cause, ccr.origin_host,
                      bundle_units, "EVENT")
    cdrs.write(tx.txn, ctx.dbs, record)
