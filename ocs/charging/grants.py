"""One rating group of a session: its usage charged, its next quota granted (or refused), its CDR
written when it closes.

The cumulative state of a (session, rating group) is a RatingGroupState in the session record;
its money units are rated cumulatively (ocs.charging.burst). A request's MSCC goes through
answer_mscc in steps: find the rate, check the reported amounts, bring the state up to date,
then either only charge the usage or charge it and hold the next grant in one balance op.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from balance import ops
from balance.errors import AccountNotActive, InsufficientFunds
from ocs.billing import cdr as cdrs
from ocs.charging.answers import final_unit
from ocs.charging.burst import BurstPricing, fee_waived
from ocs.charging.counters import add_period_usage, period_usage
from ocs.charging.service_units import (
    MAX_REPORT_UNITS,
    MAX_SESSION_UNITS,
    NO_RATING_GROUP,
    grant_units,
    units_of,
)
from ocs.charging.sessions import RatingGroupState, Session
from ocs.charging.tariffs import find_rate
from protocol import constants as C
from protocol.records import CCR, MSCCAnswer, MSCCRequest

if TYPE_CHECKING:
    from balance.records import CommitResult, ReserveResult
    from balance.store import Tx
    from ocs.charging.context import Context
    from rating.rater import Rater
    from rating.tariff import Rate

log = logging.getLogger("ocs.credit")


def answer_mscc(tx: Tx, ctx: Context, ccr: CCR, sess: Session, rater: Rater | None,
                m: MSCCRequest, final: bool, active: bool) -> MSCCAnswer:
    """Apply one MSCC of a session request (INITIAL / UPDATE / TERMINATION) and answer it."""
    rg = m.rating_group if m.rating_group is not None else NO_RATING_GROUP
    sid = m.service_identifiers[0] if m.service_identifiers else None
    ans = MSCCAnswer(result_code=C.DIAMETER_SUCCESS, rating_group=m.rating_group, service_identifier=sid)
    rate = find_rate(rater, sess.plan, sess.currency, rg)
    if rate is None or rater is None:  # no rater finds no rate
        ans.result_code = C.DIAMETER_RATING_FAILED
        return ans
    st = sess.groups.get(rg)
    unit = rate.unit if st is None or st.closed else st.unit
    used = sum(units_of(u, unit) for u in m.used)
    if (used > MAX_REPORT_UNITS or units_of(m.requested, unit) > MAX_REPORT_UNITS
            or (st is not None and not st.closed and st.total_units + used > MAX_SESSION_UNITS)):
        ans.result_code = C.DIAMETER_INVALID_AVP_VALUE  # no network element reports this much
        return ans
    st = _current_state(tx, ctx, sess, rg, rate, st, unit, sid)
    reasons = {u.reporting_reason for u in m.used} | {m.reporting_reason}
    # FINAL ends the rating group's quota unless the same request asks for more of it: with
    # several services in one rating group, one service's FINAL must not cut off the others.
    group_final = final or (C.ReportingReason.FINAL in reasons and m.requested is None)
    if m.requested is None or group_final or not active:  # no quota wanted (or allowed)
        if used or st.reserved:
            commit_usage(tx, ctx, sess, rg, st, rate, rater, used)
        if group_final:
            close_group(tx, ctx.dbs, sess, rg, st, "NORMAL")
        elif not active:
            ans.result_code = C.DIAMETER_END_USER_SERVICE_DENIED
        return ans
    cfg = ctx.cfg
    want = units_of(m.requested, unit) or cfg.default_quota.get(unit, 1)
    want = min(want, cfg.max_quota.get(unit, want))
    try:
        res = _charge_and_hold(tx, ctx, ccr, sess, rg, st, rate, rater, used, want)
    except AccountNotActive:  # suspended or closed mid-session: take the usage, grant nothing more
        if used or st.reserved:
            commit_usage(tx, ctx, sess, rg, st, rate, rater, used)
        ans.result_code = C.DIAMETER_END_USER_SERVICE_DENIED
        return ans
    st.granted_at = tx.now
    if res is None or res.units_granted <= 0:
        st.reserved = False
        ans.result_code = C.DIAMETER_CREDIT_LIMIT_REACHED
        return ans
    st.reserved, st.granted = True, res.units_granted
    _fill_grant(ans, ctx, rater, rate, unit, res.units_granted, tx.now)
    if res.limited:  # the last grant the balance allows
        final_unit(ans, rater, sess.plan)
    return ans


def _current_state(tx: Tx, ctx: Context, sess: Session, rg: int, rate: Rate,
                   st: RatingGroupState | None, unit: str, sid: int | None) -> RatingGroupState:
    """The rating group's open state: new, restarted after FINAL, or brought up to the month."""
    now = tx.now
    month = period_usage(tx, ctx, sess.account_id, rg, rate)  # 0 unless the rate has tiers
    if st is None:
        st = sess.groups[rg] = RatingGroupState(unit, first_ts=now, granted_at=now,
                                                period_used=month, service_identifier=sid)
    elif st.closed:
        # A new service burst after FINAL: a fresh cumulative count (and a CDR of its own later).
        RatingGroupState.__init__(st, unit, first_ts=now, granted_at=now,
                                  period_used=max(month, st.period_used + st.total_units),
                                  service_identifier=sid,
                                  fee_paid=st.fee_paid or st.money_units > 0)
    elif rate.tiers:
        # The account's other sessions may have used this rating group meanwhile: price our next
        # units from where the month is now, not from where it was when this session began.
        st.period_used = max(st.period_used, month - st.total_units)
    return st


def _charge_and_hold(tx: Tx, ctx: Context, ccr: CCR, sess: Session, rg: int,
                     st: RatingGroupState, rate: Rate, rater: Rater, used: int,
                     want: int) -> ReserveResult | None:
    """Charge the usage (if any, or settle what is held) and hold up to `want` units more, in one
    balance op; None when the balance covers nothing. The usage is priced from when its quota
    was granted, the new grant from now, after the money units the usage settles."""
    now = tx.now
    waived = fee_waived(rate, st.fee_paid)
    grant_price = BurstPricing(rater, rate, st.money_units, now, st.period_used, waived, limit=want)
    expires_at = now + ctx.cfg.timeout()
    try:
        if used or st.reserved:
            used_price = BurstPricing(rater, rate, st.money_units, st.granted_at, st.period_used, waived)
            cres, res = ops.commit_and_reserve(
                tx, None, account_id=sess.account_id, session_id=ccr.session_id, rating_group=rg,
                used_units=used, used_price=used_price, unit=st.unit, units=want, price=grant_price,
                all_or_nothing=False, expires_at=expires_at, rate_ref=rater.version)
            _account_usage(tx, ctx, sess, rg, st, rate, used, cres)
            return res
        return ops.reserve(tx, None, account_id=sess.account_id, session_id=ccr.session_id,
                           rating_group=rg, unit=st.unit, units=want, price=grant_price,
                           all_or_nothing=False, expires_at=expires_at, rate_ref=rater.version)
    except InsufficientFunds:
        return None


def _fill_grant(ans: MSCCAnswer, ctx: Context, rater: Rater, rate: Rate, unit: str, granted: int,
                now: int) -> None:
    """The Granted-Service-Unit and what goes with it: validity, holding time, thresholds."""
    cfg = ctx.cfg
    ans.granted = grant_units(unit, granted)
    ans.validity_time = cfg.validity_time
    until = rater.band_until(rate, now)
    if until is not None and until - now < cfg.validity_time:
        # Volume and events are priced at the band of the grant's instant (they have no timeline
        # of their own): make the gateway report when the band ends, so later usage gets its
        # price. Time is split at band edges by the kernel anyway; it reports there too.
        ans.validity_time = max(1, until - now)
    if cfg.quota_holding_time:
        ans.quota_holding_time = cfg.quota_holding_time
    if cfg.quota_threshold_percent:
        threshold = granted * cfg.quota_threshold_percent // 100
        if unit == "seconds":
            ans.time_quota_threshold = threshold
        elif unit == "octets":
            ans.volume_quota_threshold = threshold


def commit_usage(tx: Tx, ctx: Context, sess: Session, rg: int, st: RatingGroupState, rate: Rate,
                 rater: Rater, used: int) -> None:
    """Charge reported usage (releasing what else is held) without a new grant."""
    price = BurstPricing(rater, rate, st.money_units, st.granted_at, st.period_used,
                         fee_waived(rate, st.fee_paid))
    res = ops.commit(tx, None, account_id=sess.account_id,
                     session_id=sess.session_id, rating_group=rg, used_units=used, unit=st.unit,
                     price=price)
    _account_usage(tx, ctx, sess, rg, st, rate, used, res)


def _account_usage(tx: Tx, ctx: Context, sess: Session, rg: int, st: RatingGroupState, rate: Rate,
                   used: int, res: CommitResult) -> None:
    """Fold a commit's outcome into the cumulative state of the (session, rating group)."""
    st.reserved = False
    st.granted = 0
    st.total_units += used
    st.bundle_units += res.bundle_units_used
    st.money_units += res.money_units
    st.amount += res.from_balance  # a money bundle's share is not charged money, like a unit bundle's
    if res.shortfall:
        log.warning("session %s rg %d: used beyond what the balance covers, %d micro-units not collected",
                    sess.session_id, rg, res.shortfall)
    if used and rate.tiers:
        add_period_usage(tx, ctx, sess.account_id, rg, used)


def close_group(tx: Tx, dbs: dict[str, Any], sess: Session, rg: int, st: RatingGroupState,
                cause: str) -> None:
    """Release what is still held and write the (session, rating group)'s CDR, once."""
    if st.closed:
        return
    if st.reserved:
        ops.release(tx, None, account_id=sess.account_id,
                    session_id=sess.session_id, rating_group=rg)
        st.reserved = False
    st.closed = True
    if st.total_units == 0 and st.amount == 0:
        return  # nothing was used: no CDR (the grant was simply given back)
    record = cdrs.CDR(0, sess.session_id, sess.account_id, sess.subscription_id, sess.plan, rg,
                      st.service_identifier, st.unit, st.total_units, st.amount, sess.currency,
                      sess.tariff_version, st.first_ts, tx.now, cause, sess.origin_host,
                      st.bundle_units, "SESSION")
    cdrs.write(tx.txn, dbs, record)
