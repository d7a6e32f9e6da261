"""RFC 8506 credit control with the 3GPP Gy profile: one CCR in, one CCA out, inside ONE write txn.

`process` runs in the group-commit writer's thread inside the batch transaction, so the debit, the
reservation, the session state, the CDR and the answer bytes (kept for replaying duplicates) commit
together or not at all; the answer leaves only after that commit is durable.

Money units of a (session, rating group) are rated cumulatively: each report costs
rater.cost(rate, units paid with money before, units now, ...), so 45 s + 130 s at 60/60 is 3
increments, never 4. Units a bundle pays for cost no money and do not advance the money count.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from balance import ops, schema
from balance.errors import AccountNotActive, InsufficientFunds
from balance.money import currency_numeric
from ocs.billing import cdr as cdrs
from ocs.charging import sessions
from ocs.charging.burst import BurstPricing, fee_waived
from ocs.charging.sessions import RatingGroupState, Session
from ocs.charging.settings import ChargingSettings
from protocol import build as B
from protocol import constants as C
from protocol.cca import encode_cca
from protocol.records import CCA, CCR, CostInformation, FinalUnit, MSCCAnswer, MSCCRequest, Units
from protocol.units import encode_units

if TYPE_CHECKING:
    from balance.records import ReserveResult
    from rating.rater import Rater

log = logging.getLogger("ocs.credit")

UNIT_FIELD = {"seconds": "time", "octets": "total_octets", "events": "service_specific_units"}
_U32 = struct.Struct(">I")
OPEN_SESSIONS_KEY = schema.META_OPEN_SESSIONS
NO_RATING_GROUP = 0
# Session-Ids are parts of LMDB keys (at most 511 bytes) with up to 13 bytes around them; real ones
# are a DiameterIdentity (<= 255) and a few numbers. Longer ones, or ones with NUL (our key
# separator), are refused before anything is stored.
MAX_SESSION_ID_BYTES = 400
# Bounds on reported units (8.9 million years of seconds, 281 TB of octets per report): past them a
# request is refused (5004) instead of priced, so the rating kernel's int64 sums cannot overflow
# (before + units + month usage < 2**58).
MAX_REPORT_UNITS = 1 << 48
MAX_SESSION_UNITS = 1 << 56
INITIAL, UPDATE, TERMINATION, EVENT = (int(t) for t in C.CCRequestType)
DIRECT_DEBITING, REFUND_ACCOUNT, CHECK_BALANCE, PRICE_ENQUIRY = (int(a) for a in C.RequestedAction)  # what a CCR without a Rating-Group is rated as (a wildcard rate can take it)


SERVER_DBS = schema.SERVER_DBS  # LMDB dbs of the charging server beyond the balance store's


def open_dbs(store) -> dict:  # type: ignore[no-untyped-def]
    """The store's dbs plus the server's own (created when missing)."""
    with store.env.begin(write=True) as txn:
        extra = {n: store.env.open_db(n.encode(), txn=txn, create=True) for n in SERVER_DBS}
    return {**store.dbs, **extra}


@dataclass(slots=True)
class Context:
    """What the writer-thread code needs: settings, LMDB handles, and the tariff versions."""

    cfg: ChargingSettings  # built by the engine from its ServeConfig
    dbs: dict
    raters: Callable[[int | None], Rater | None]  # version (None = current) -> Rater | None


def adjust_open_sessions(tx, dbs, delta: int) -> None:  # type: ignore[no-untyped-def]
    """The open-session count in meta, kept in the same txn as the sessions it counts."""
    raw = tx.read_txn.get(OPEN_SESSIONS_KEY, db=dbs["meta"])
    tx.write_txn.put(OPEN_SESSIONS_KEY, str(max(0, (int(raw) if raw else 0) + delta)).encode(), db=dbs["meta"])


def units_of(u: Units | None, unit: str) -> int:
    """The amount of one unit kind in a service-unit AVP. Octets: the larger of CC-Total-Octets and
    input + output, so a report cannot shrink its usage by sending a small total beside them."""
    if u is None:
        return 0
    if unit == "octets":
        both = (u.input_octets or 0) + (u.output_octets or 0)
        return max(u.total_octets or 0, both)
    value = getattr(u, UNIT_FIELD[unit])
    return value or 0


def grant_units(unit: str, n: int) -> Units:
    u = Units()
    setattr(u, UNIT_FIELD[unit], n)
    return u


def period_key(account_id: str, now: int, rating_group: int) -> bytes:
    month = datetime.fromtimestamp(now, UTC).strftime("%Y%m")
    return f"{account_id}\0{month}\0".encode() + _U32.pack(rating_group & 0xFFFFFFFF)


def _counter(tx, ctx: Context, key: bytes) -> int:  # type: ignore[no-untyped-def]
    """One of the per-account counters of the "usage" db (month usage, refundable money)."""
    raw = tx.read_txn.get(key, db=ctx.dbs["usage"])
    return int(raw) if raw else 0


def _add_to_counter(tx, ctx: Context, key: bytes, delta: int, cap: int | None = None) -> None:  # type: ignore[no-untyped-def]
    total = _counter(tx, ctx, key) + delta
    tx.write_txn.put(key, str(total if cap is None else min(total, cap)).encode(), db=ctx.dbs["usage"])


def period_usage(tx, ctx: Context, account_id: str, rg: int, rate) -> int:  # type: ignore[no-untyped-def]
    """Units of this rating group the account used this calendar month (UTC); only tiers need it."""
    return _counter(tx, ctx, period_key(account_id, tx.now, rg)) if rate.tiers else 0


def add_period_usage(tx, ctx: Context, account_id: str, rg: int, used: int) -> None:  # type: ignore[no-untyped-def]
    """Record `used` more units; the stored figure never goes backwards (other sessions add too)
    and stops at MAX_SESSION_UNITS (the top tier long before), keeping the kernel in int64."""
    _add_to_counter(tx, ctx, period_key(account_id, tx.now, rg), used, MAX_SESSION_UNITS)


def _refundable_key(account_id: str, rg: int) -> bytes:
    return f"{account_id}\0refund\0".encode() + _U32.pack(rg & 0xFFFFFFFF)  # no month: digits


def _refundable(tx, ctx: Context, account_id: str, rg: int) -> int:  # type: ignore[no-untyped-def]
    """Money the account's direct-debited events of this rating group paid, less what was refunded:
    the most a REFUND_ACCOUNT may credit back."""
    return _counter(tx, ctx, _refundable_key(account_id, rg))


def _add_refundable(tx, ctx: Context, account_id: str, rg: int, amount: int) -> None:  # type: ignore[no-untyped-def]
    _add_to_counter(tx, ctx, _refundable_key(account_id, rg), amount)


def _resolve_account(tx, ccr: CCR):  # type: ignore[no-untyped-def]
    """(account, subscription id) for the first Subscription-Id that resolves, E.164 first."""
    ids = sorted(ccr.subscription_ids, key=lambda t: (t[0] != C.SubscriptionIdType.END_USER_E164, t[0]))
    if not ids and ccr.user_name:
        ids = [(C.SubscriptionIdType.END_USER_NAI, ccr.user_name)]
    for _kind, data in ids:
        account_id = tx.resolve(data)
        if account_id is not None:
            return tx.get_account(account_id), data
    return None, (ids[0][1] if ids else "")


def make_cca(ccr: CCR, cfg: ChargingSettings, result: int, mscc: list[MSCCAnswer] | None = None,
            **extra: Any) -> CCA:
    return CCA(session_id=ccr.session_id, result_code=result, origin_host=cfg.origin_host,
               origin_realm=cfg.origin_realm, request_type=ccr.request_type,
               request_number=ccr.request_number, auth_application_id=C.APP_CREDIT_CONTROL,
               mscc=mscc or [], **extra)


def _message_result(answers: list[MSCCAnswer]) -> int:
    """2001 when any service succeeded; otherwise the common failure (RFC 8506 §8.2 spirit)."""
    # every answer built here carries a result code (MSCCAnswer types it optional for decoding)
    codes = cast("set[int]", {a.result_code for a in answers})
    if not codes or C.DIAMETER_SUCCESS in codes:
        return C.DIAMETER_SUCCESS
    if len(codes) == 1:
        return codes.pop()
    return C.DIAMETER_CREDIT_LIMIT_REACHED if C.DIAMETER_CREDIT_LIMIT_REACHED in codes else min(codes)


def _mscc_list(ccr: CCR) -> list[MSCCRequest]:
    """The MSCCs, or one synthesised from top-level RSU/USU when a client sends none (RFC 4006 single-service)."""
    if ccr.mscc:
        return ccr.mscc
    if ccr.requested is None and not ccr.used:
        return []
    return [MSCCRequest(rating_group=None,
                        service_identifiers=[ccr.service_identifier] if ccr.service_identifier is not None else [],
                        requested=ccr.requested, used=list(ccr.used), reporting_reason=None)]


def process(tx, ctx: Context, ccr: CCR) -> bytes:  # type: ignore[no-untyped-def]
    """Apply one CCR and return the encoded CCA (this request's hop-by-hop / end-to-end ids).

    A retransmission gets the answer first sent (the caller patches the ids) and changes nothing."""
    dbs = ctx.dbs
    sid = ccr.session_id
    if len(sid.encode()) > MAX_SESSION_ID_BYTES or "\0" in sid:
        cca = make_cca(ccr, ctx.cfg, C.DIAMETER_INVALID_AVP_VALUE, failed_avp=B.utf8(263, sid),
                       error_message=f"Session-Id longer than {MAX_SESSION_ID_BYTES} bytes or with NUL")
        return encode_cca(cca, ccr.hop_by_hop, ccr.end_to_end)
    sess = sessions.load(tx.read_txn, dbs, ccr.session_id)
    if sess is not None:
        first = sessions.find_answer(sess, ccr.request_number)
        if first is not None:
            return first
    if ccr.request_type == EVENT:
        if sess is not None:  # a new request reusing an event's Session-Id
            cca = make_cca(ccr, ctx.cfg, C.DIAMETER_UNABLE_TO_COMPLY, error_message="Session-Id reused")
            return encode_cca(cca, ccr.hop_by_hop, ccr.end_to_end)
        cca = _event(tx, ctx, ccr)
        now = tx.now
        sess = Session(ccr.session_id, "", "", "", "", 0, ccr.origin_host, now, now,
                       state=sessions.CLOSED, closed_at=now)
        sess.mark_seen(ccr.request_number)
    else:
        sess, cca = _session(tx, ctx, ccr, sess)
    raw = encode_cca(cca, ccr.hop_by_hop, ccr.end_to_end)
    if sess is not None:
        sessions.remember_answer(sess, ccr.request_number, ccr.origin_host, ccr.end_to_end, raw)
        sessions.save(tx.write_txn, dbs, sess)
    return raw


# -- session-based charging (INITIAL / UPDATE / TERMINATION) --------------------------------------

def _session(tx, ctx: Context, ccr: CCR, sess: Session | None) -> tuple[Session | None, CCA]:  # type: ignore[no-untyped-def]
    cfg, dbs, now = ctx.cfg, ctx.dbs, tx.now
    rtype = ccr.request_type
    if rtype == INITIAL:
        if sess is not None and sess.state != sessions.REFUSED:
            return None, make_cca(ccr, cfg, C.DIAMETER_UNABLE_TO_COMPLY,
                                 error_message="session already exists")
        if sess is not None and sess.has_seen(ccr.request_number):
            return None, _answer_gone(ccr, cfg)
        account, sub = _resolve_account(tx, ccr)
        if account is None:
            return _refused(ccr, sess, now), make_cca(ccr, cfg, C.DIAMETER_USER_UNKNOWN)
        if account.status != "active":
            return _refused(ccr, sess, now), make_cca(ccr, cfg, C.DIAMETER_END_USER_SERVICE_DENIED)
        rater = ctx.raters(None)
        version = rater.version if rater is not None else 0
        fresh = Session(ccr.session_id, account.id, sub, account.plan, account.currency, version,
                        ccr.origin_host, now, now)
        if sess is not None:  # a CCR-I refused before (a retry after a top-up): keep its replays
            _carry_over(sess, fresh)
        sess = fresh
    else:
        if sess is None or sess.state != sessions.OPEN:  # closed, refused or never seen
            return None, make_cca(ccr, cfg, C.DIAMETER_UNKNOWN_SESSION_ID)
        if sess.has_seen(ccr.request_number):  # answered, but too long ago to replay
            return None, _answer_gone(ccr, cfg)
        account = None  # read by the balance ops, which refuse a suspended or closed account
        rater = ctx.raters(sess.tariff_version) if sess.tariff_version else ctx.raters(None)
        if rater is not None and not sess.tariff_version:
            sess.tariff_version = rater.version
    sess.seen = now
    sess.mark_seen(ccr.request_number)  # a late number not seen before is applied, not refused
    final = rtype == TERMINATION
    active = account is None or account.status == "active"

    answers: list[MSCCAnswer] = []
    for m, merged_into in _by_rating_group(_mscc_list(ccr)):
        if merged_into is None:
            answers.append(_mscc(tx, ctx, ccr, sess, rater, m, final, active))
        else:  # its usage and request went into the first MSCC of the rating group: one grant, one hold
            first = answers[merged_into]
            answers.append(MSCCAnswer(result_code=first.result_code, rating_group=m.rating_group,
                                      service_identifier=m.service_identifiers[0] if m.service_identifiers else None))
    if final:
        for rg, st in sess.groups.items():
            _close_group(tx, ctx, sess, rg, st, "NORMAL")
        sess.state, sess.closed_at = sessions.CLOSED, now
        adjust_open_sessions(tx, dbs, -1)
    if not active and not final:
        return sess, make_cca(ccr, cfg, C.DIAMETER_END_USER_SERVICE_DENIED, answers)
    result = _message_result(answers)
    if rtype == INITIAL:
        if result != C.DIAMETER_SUCCESS and not any(map(_holds_or_used, sess.groups.values())):
            sess.groups.clear()  # nothing reserved, nothing used: no CDR, nothing to release
            sess.state, sess.closed_at = sessions.REFUSED, now
        else:
            adjust_open_sessions(tx, dbs, +1)
    return sess, _single_service(ccr, make_cca(ccr, cfg, result, answers,
                                               failed_avp=_failed_avp(result, answers, ccr)))


def _answer_gone(ccr: CCR, cfg: ChargingSettings) -> CCA:
    return make_cca(ccr, cfg, C.DIAMETER_UNABLE_TO_COMPLY,
                    error_message="duplicate of a request answered earlier; its answer is no longer held")


def _holds_or_used(st: RatingGroupState) -> bool:
    return st.reserved or st.total_units > 0 or st.amount != 0 or st.bundle_units > 0


def _refused(ccr: CCR, sess: Session | None, now: int) -> Session:
    """The record of a CCR-I refused before anything was granted: only its answer, for replay.

    It is not an open session (not counted, never stale); the sweeper forgets it after
    dedup_retention like a closed one."""
    rec = Session(ccr.session_id, "", "", "", "", 0, ccr.origin_host, now, now,
                  state=sessions.REFUSED, closed_at=now)
    if sess is not None:
        _carry_over(sess, rec)
    rec.mark_seen(ccr.request_number)
    return rec


def _carry_over(old: Session, new: Session) -> None:
    """A refused CCR-I's record reused by the next CCR-I of that Session-Id: its answers stay
    replayable and its index key is replaced, not left behind."""
    new.answers, new.seen_low, new.seen_above = old.answers, old.seen_low, old.seen_above
    new.due, new.filed_state = old.due, old.filed_state


def _rate(rater, plan: str, currency: str, rg: int):  # type: ignore[no-untyped-def]
    """The rate for (plan, rating group), or None (5031): also when the tariff's prices are in
    another currency than the account's (EUR micro-prices are not JPY ones)."""
    if rater is None or rater.currency != currency:
        return None
    return rater.find(plan, rg)


def _failed_avp(result: int, answers: list[MSCCAnswer], ccr: CCR) -> bytes | None:
    """The AVP a message-level error names: for 5031 the Rating-Group that could not be rated
    (RFC 8506), for 5004 the first service-unit AVP over MAX_REPORT_UNITS."""
    if result == C.DIAMETER_RATING_FAILED:
        rg = next((a.rating_group for a in answers if a.result_code == C.DIAMETER_RATING_FAILED), None)
        return B.u32(432, rg if rg is not None else NO_RATING_GROUP)
    if result == C.DIAMETER_INVALID_AVP_VALUE:
        for m in _mscc_list(ccr):
            for code, u in [(437, m.requested), *((446, x) for x in m.used)]:
                if u is not None and any((v or 0) > MAX_REPORT_UNITS for v in (
                        u.time, u.total_octets, u.input_octets, u.output_octets, u.service_specific_units)):
                    return B.group(code, encode_units(u))
    return None


def _by_rating_group(items: list[MSCCRequest]) -> list[tuple[MSCCRequest, int | None]]:
    """MSCCs with a rating group seen earlier in the request are folded into the first one
    (usage summed, first RSU kept): a rating group has one quota and one reservation. Returns
    (MSCC to process, None) or (MSCC, index of the answer it was folded into). Never mutates the
    request (ops may run twice)."""
    out: list[tuple[MSCCRequest, int | None]] = []
    first: dict[int, int] = {}
    for m in items:
        rg = m.rating_group if m.rating_group is not None else NO_RATING_GROUP  # as _mscc keys it
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
    the rating group is decided by _mscc, which keeps it open while one of them asks for quota)."""
    if C.ReportingReason.FINAL in (a, b):
        return C.ReportingReason.FINAL
    return a if a is not None else b


def _single_service(ccr: CCR, cca: CCA) -> CCA:
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


def _mscc(tx, ctx: Context, ccr: CCR, sess: Session, rater, m: MSCCRequest,  # type: ignore[no-untyped-def]
          final: bool, active: bool) -> MSCCAnswer:
    cfg, now = ctx.cfg, tx.now
    rg = m.rating_group if m.rating_group is not None else NO_RATING_GROUP
    sid = m.service_identifiers[0] if m.service_identifiers else None
    ans = MSCCAnswer(result_code=C.DIAMETER_SUCCESS, rating_group=m.rating_group, service_identifier=sid)
    rate = _rate(rater, sess.plan, sess.currency, rg)
    if rate is None:
        ans.result_code = C.DIAMETER_RATING_FAILED
        return ans
    st = sess.groups.get(rg)
    fresh = st is None or st.closed
    # not fresh: st is the rating group's open state
    unit = rate.unit if fresh else cast(RatingGroupState, st).unit
    used = sum(units_of(u, unit) for u in m.used)
    if (used > MAX_REPORT_UNITS or units_of(m.requested, unit) > MAX_REPORT_UNITS
            or (not fresh and cast(RatingGroupState, st).total_units + used > MAX_SESSION_UNITS)):
        ans.result_code = C.DIAMETER_INVALID_AVP_VALUE  # no network element reports this much
        return ans
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
    reasons = {u.reporting_reason for u in m.used} | {m.reporting_reason}
    # FINAL ends the rating group's quota unless the same request asks for more of it: with
    # several services in one rating group, one service's FINAL must not cut off the others.
    group_final = final or (C.ReportingReason.FINAL in reasons and m.requested is None)
    wants_quota = m.requested is not None and not group_final and active
    if not wants_quota:
        if used or st.reserved:
            _commit(tx, ctx, sess, rg, st, rate, rater, used)
        if group_final:
            _close_group(tx, ctx, sess, rg, st, "NORMAL")
        elif not active:
            ans.result_code = C.DIAMETER_END_USER_SERVICE_DENIED
        return ans
    want = units_of(m.requested, unit) or cfg.default_quota.get(unit, 1)
    want = min(want, cfg.max_quota.get(unit, want))
    # the usage is priced from when its quota was granted; the new grant from now, after the
    # money units the usage settles (commit_and_reserve passes that count to price)
    waived = fee_waived(rate, st.fee_paid)
    used_price = BurstPricing(rater, rate, st.money_units, st.granted_at, st.period_used, waived)
    price = BurstPricing(rater, rate, st.money_units, now, st.period_used, waived, limit=want)
    hold = {"account_id": sess.account_id, "session_id": ccr.session_id, "rating_group": rg,
            "unit": unit, "units": want, "price": price, "all_or_nothing": False,
            "expires_at": now + cfg.timeout(), "rate_ref": rater.version}
    try:
        if used or st.reserved:
            cres, res = ops.commit_and_reserve(tx, None, used_units=used, used_price=used_price, **hold)
            _account_usage(tx, ctx, sess, rg, st, rate, used, cres)
        else:
            res = ops.reserve(tx, None, **hold)
    except InsufficientFunds:
        res = None
    except AccountNotActive:  # suspended or closed mid-session: take the usage, grant nothing more
        if used or st.reserved:
            _commit(tx, ctx, sess, rg, st, rate, rater, used)
        ans.result_code = C.DIAMETER_END_USER_SERVICE_DENIED
        return ans
    granted = res.units_granted if res is not None else 0
    st.granted_at = now
    if granted <= 0:
        st.reserved = False
        ans.result_code = C.DIAMETER_CREDIT_LIMIT_REACHED
        return ans
    st.reserved, st.granted = True, granted
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
    if cast("ReserveResult", res).limited:  # granted > 0: res is the reservation made
        _final_unit(ans, rater, sess.plan)
    return ans


def _final_unit(ans: MSCCAnswer, rater, plan_name: str) -> None:  # type: ignore[no-untyped-def]
    """The last grant the balance allows: tell the gateway what to do when it is used up."""
    plan = rater.tariff.plans.get(plan_name) if rater is not None else None
    action = getattr(plan, "final_unit_action", C.FinalUnitAction.TERMINATE) or 0
    ans.final_unit_action = action
    if action == C.FinalUnitAction.REDIRECT:
        ans.redirect_address_type = C.RedirectAddressType.URL
        ans.redirect_server_address = getattr(plan, "redirect_address", None) or ""
    elif action == C.FinalUnitAction.RESTRICT_ACCESS:
        rule = getattr(plan, "restriction_filter_rule", None)
        if rule:
            ans.restriction_filter_rules = [rule]


def _commit(tx, ctx: Context, sess: Session, rg: int, st: RatingGroupState, rate, rater,  # type: ignore[no-untyped-def]
            used: int) -> None:
    price = BurstPricing(rater, rate, st.money_units, st.granted_at, st.period_used,
                         fee_waived(rate, st.fee_paid))
    res = ops.commit(tx, None, account_id=sess.account_id,
                     session_id=sess.session_id, rating_group=rg, used_units=used, unit=st.unit,
                     price=price)
    _account_usage(tx, ctx, sess, rg, st, rate, used, res)


def _account_usage(tx, ctx: Context, sess: Session, rg: int, st: RatingGroupState, rate,  # type: ignore[no-untyped-def]
                   used: int, res) -> None:
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


def _close_group(tx, ctx: Context, sess: Session, rg: int, st: RatingGroupState, cause: str) -> None:  # type: ignore[no-untyped-def]
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
    cdrs.write(tx.txn, ctx.dbs, record)


def close_stale(tx, ctx: Context, sess: Session) -> None:  # type: ignore[no-untyped-def]
    """The sweeper's close of a session that went quiet: release holds, CDRs say STALE."""
    for rg, st in sess.groups.items():
        _close_group(tx, ctx, sess, rg, st, "STALE")
    sess.state, sess.closed_at = sessions.CLOSED, tx.now


# -- event-based charging (CCR-EVENT, RFC 8506 §6.3 / §6.4 / §6.5) ---------------------------------

def _event(tx, ctx: Context, ccr: CCR) -> CCA:  # type: ignore[no-untyped-def]
    cfg, now = ctx.cfg, tx.now
    account, sub = _resolve_account(tx, ccr)
    if account is None:
        return make_cca(ccr, cfg, C.DIAMETER_USER_UNKNOWN)
    if account.status != "active":
        return make_cca(ccr, cfg, C.DIAMETER_END_USER_SERVICE_DENIED)
    action = ccr.requested_action if ccr.requested_action is not None else DIRECT_DEBITING
    rater = ctx.raters(None)
    items = _mscc_list(ccr)
    if not items:
        return make_cca(ccr, cfg, C.DIAMETER_MISSING_AVP, error_message="no Requested-Service-Unit",
                        failed_avp=B.group(437, b""))  # RFC 6733 §7.5: an example of the missing AVP
    answers: list[MSCCAnswer] = []
    total_cost = 0
    enough = True
    for m in items:
        rg = m.rating_group if m.rating_group is not None else NO_RATING_GROUP
        sid = m.service_identifiers[0] if m.service_identifiers else None
        ans = MSCCAnswer(result_code=C.DIAMETER_SUCCESS, rating_group=m.rating_group, service_identifier=sid)
        answers.append(ans)
        rate = _rate(rater, account.plan, account.currency, rg)
        if rate is None:
            ans.result_code = C.DIAMETER_RATING_FAILED
            continue
        rater = cast("Rater", rater)  # _rate found a rate: there is a rater (same object)
        units = units_of(m.requested, rate.unit) or sum(units_of(u, rate.unit) for u in m.used)
        if units == 0 and rate.unit == "events":
            units = 1  # an SMS is one event even when the SMSC leaves the count out
        if not 0 < units <= MAX_REPORT_UNITS:  # nothing (or another unit kind, or absurdly much)
            ans.result_code = C.DIAMETER_INVALID_AVP_VALUE
            continue
        period_used = period_usage(tx, ctx, account.id, rg, rate)
        # an event is priced on its own (from 0) at this instant
        price = BurstPricing(rater, rate, 0, now, period_used)
        cost = price.cost(0, units)
        total_cost += cost
        if action == PRICE_ENQUIRY:
            continue
        if action == CHECK_BALANCE:
            enough = enough and ops.covers(tx, account_id=account.id, rating_group=rg,
                                           unit=rate.unit, units=units, price=price)
            continue
        if action == REFUND_ACCOUNT:
            if cost > _refundable(tx, ctx, account.id, rg):
                # More than this account's events of this rating group were charged in money
                # (bundle-paid events give no money back): refused, nothing credited.
                ans.result_code = C.DIAMETER_UNABLE_TO_COMPLY
                total_cost -= cost
                continue
            if cost > 0:
                ops.refund(tx, None, account_id=account.id, amount=cost,
                           session_id=ccr.session_id, rating_group=rg)
                _add_refundable(tx, ctx, account.id, rg, -cost)
            _event_cdr(tx, ctx, ccr, account, sub, rg, sid, rate.unit, units, -cost, 0, rater, "REFUND")
            ans.granted = grant_units(rate.unit, units)
            continue
        # DIRECT_DEBITING: all or nothing, bundles first
        try:
            ops.reserve(tx, None, account_id=account.id,
                        session_id=ccr.session_id, rating_group=rg, unit=rate.unit, units=units,
                        price=price, all_or_nothing=True, expires_at=now + cfg.timeout(), rate_ref=rater.version)
        except InsufficientFunds:
            ans.result_code = C.DIAMETER_CREDIT_LIMIT_REACHED
            total_cost -= cost
            continue
        res = ops.commit(tx, None, account_id=account.id,
                         session_id=ccr.session_id, rating_group=rg, used_units=units,
                         price=price)
        if rate.tiers:
            add_period_usage(tx, ctx, account.id, rg, units)
        if res.from_balance:  # a refund gives back cash only where cash was taken
            _add_refundable(tx, ctx, account.id, rg, res.from_balance)
        _event_cdr(tx, ctx, ccr, account, sub, rg, sid, rate.unit, units, res.from_balance,
                   res.bundle_units_used, rater, "EVENT")
        total_cost += res.money_debited - cost
        ans.granted = grant_units(rate.unit, units)
    extra: dict = {}
    if action == CHECK_BALANCE:
        extra["check_balance_result"] = C.CheckBalanceResult.ENOUGH_CREDIT if enough else C.CheckBalanceResult.NO_CREDIT
    if action in (PRICE_ENQUIRY, DIRECT_DEBITING):
        extra["cost_information"] = CostInformation(value_digits=total_cost, exponent=-6,
                                                    currency_code=currency_numeric(account.currency),
                                                    cost_unit=None)
    if action in (PRICE_ENQUIRY, CHECK_BALANCE):
        for a in answers:  # an enquiry grants nothing (RFC 8506 §6.4, §6.5)
            a.granted = None
    result = _message_result(answers)
    return _single_service(ccr, make_cca(ccr, cfg, result, answers,
                                         failed_avp=_failed_avp(result, answers, ccr), **extra))


def _event_cdr(tx, ctx: Context, ccr: CCR, account, sub: str, rg: int, sid: int | None,  # type: ignore[no-untyped-def]
               unit: str, units: int, amount: int, bundle_units: int, rater, cause: str) -> None:
    now = tx.now
    record = cdrs.CDR(0, ccr.session_id, account.id, sub, account.plan, rg, sid, unit, units, amount,
                      account.currency, rater.version, now, now, cause, ccr.origin_host, bundle_units,
                      "EVENT")
    cdrs.write(tx.txn, ctx.dbs, record)
