"""RFC 8506 credit control with the 3GPP Gy profile: one CCR in, one CCA out, inside ONE write txn.

`process` runs in the group-commit writer's thread inside the batch transaction, so the debit, the
reservation, the session state, the CDR and the answer bytes (kept for replaying duplicates) commit
together or not at all; the answer leaves only after that commit is durable.

This module holds the entry point and the session's life (INITIAL / UPDATE / TERMINATION, refusals,
replays, the sweeper's close). The rest of the rules, each in a module named for it: grants (one
rating group's usage, quota and CDR), events (CCR-EVENT), burst (cumulative pricing), answers
(shaping the CCA), services (the MSCCs of a request), service_units, subscribers, counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from balance import schema
from ocs.charging import alerts, outbox, sessions
from ocs.charging.answers import answer_gone, failed_avp, make_cca, message_result, single_service
from ocs.charging.context import Context
from ocs.charging.counters import OPEN_SESSIONS_KEY, adjust_open_sessions
from ocs.charging.events import answer_event
from ocs.charging.grants import answer_mscc, close_group
from ocs.charging.services import by_rating_group, mscc_list
from ocs.charging.sessions import RatingGroupState, Session
from ocs.charging.subscribers import resolve_account
from protocol import build as B
from protocol import constants as C
from protocol.cca import encode_cca
from protocol.records import CCA, CCR, MSCCAnswer

if TYPE_CHECKING:
    from balance.store import Store, Tx

__all__ = ["OPEN_SESSIONS_KEY", "SERVER_DBS", "Context", "adjust_open_sessions", "close_stale",
           "open_dbs", "process"]

# Session-Ids are parts of LMDB keys (at most 511 bytes) with up to 13 bytes around them; real ones
# are a DiameterIdentity (<= 255) and a few numbers. Longer ones, or ones with NUL (our key
# separator), are refused before anything is stored.
MAX_SESSION_ID_BYTES = 400
INITIAL, UPDATE, TERMINATION, EVENT = (int(t) for t in C.CCRequestType)

SERVER_DBS = schema.SERVER_DBS  # LMDB dbs of the charging server beyond the balance store's


def open_dbs(store: Store) -> dict[str, Any]:
    """The store's dbs plus the server's own (created when missing)."""
    with store.env.begin(write=True) as txn:
        extra = {n: store.env.open_db(n.encode(), txn=txn, create=True) for n in SERVER_DBS}
    return {**store.dbs, **extra}


def process(tx: Tx, ctx: Context, ccr: CCR) -> bytes:
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
        cca = answer_event(tx, ctx, ccr)
        now = tx.now
        sess = Session(ccr.session_id, "", "", "", "", 0, ccr.origin_host, now, now,
                       state=sessions.CLOSED, closed_at=now)
        sess.mark_seen(ccr.request_number)
    else:
        drawn = _bundle_units(sess)
        sess, cca = _session(tx, ctx, ccr, sess)
        if sess is not None and sess.account_id:
            _notify(tx, dbs, sess, cca, _bundle_units(sess) > drawn)
    raw = encode_cca(cca, ccr.hop_by_hop, ccr.end_to_end)
    if sess is not None:
        sessions.remember_answer(sess, ccr.request_number, ccr.origin_host, ccr.end_to_end, raw)
        sessions.save(tx.write_txn, dbs, sess)
    return raw


def _bundle_units(sess: Session | None) -> int:
    return 0 if sess is None else sum(g.bundle_units for g in sess.groups.values())


def _notify(tx: Tx, dbs: dict[str, Any], sess: Session, cca: CCA, drew_bundles: bool) -> None:
    """The webhook events a request causes, in its own transaction (ocs.charging.outbox)."""
    fui = cca.final_unit is not None
    limit = cca.result_code == C.DIAMETER_CREDIT_LIMIT_REACHED
    for m in cca.mscc:
        fui = fui or m.final_unit_action is not None
        limit = limit or m.result_code == C.DIAMETER_CREDIT_LIMIT_REACHED
    if limit:
        alerts.limit_reached(tx.write_txn, dbs, sess.account_id, sess.session_id, tx.now)
    if fui:
        groups = [m.rating_group for m in cca.mscc if m.final_unit_action is not None]
        outbox.emit(tx.write_txn, dbs, "final_unit.granted", at=tx.now, account=sess.account_id,
                    data={"session": sess.session_id, "rating_groups": groups})
    if alerts.threshold(tx.read_txn, dbs, sess.account_id, sess.plan) is not None:
        alerts.after_debit(tx.write_txn, dbs, tx.get_account(sess.account_id), tx.now)
    if drew_bundles:  # only then: a request paid in money reads no bundle
        alerts.after_bundle_use(tx.write_txn, dbs, tx.bundles(sess.account_id), tx.now)


# -- session-based charging (INITIAL / UPDATE / TERMINATION) --------------------------------------

def _session(tx: Tx, ctx: Context, ccr: CCR, sess: Session | None) -> tuple[Session | None, CCA]:
    cfg, dbs, now = ctx.cfg, ctx.dbs, tx.now
    rtype = ccr.request_type
    if rtype == INITIAL:
        if sess is not None and sess.state != sessions.REFUSED:
            return None, make_cca(ccr, cfg, C.DIAMETER_UNABLE_TO_COMPLY,
                                 error_message="session already exists")
        if sess is not None and sess.has_seen(ccr.request_number):
            return None, answer_gone(ccr, cfg)
        account, sub = resolve_account(tx, ccr)
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
            return None, answer_gone(ccr, cfg)
        account = None  # read by the balance ops, which refuse a suspended or closed account
        rater = ctx.raters(sess.tariff_version) if sess.tariff_version else ctx.raters(None)
        if rater is not None and not sess.tariff_version:
            sess.tariff_version = rater.version
    sess.seen = now
    sess.mark_seen(ccr.request_number)  # a late number not seen before is applied, not refused
    final = rtype == TERMINATION
    active = account is None or account.status == "active"

    answers: list[MSCCAnswer] = []
    for m, merged_into in by_rating_group(mscc_list(ccr)):
        if merged_into is None:
            answers.append(answer_mscc(tx, ctx, ccr, sess, rater, m, final, active))
        else:  # its usage and request went into the first MSCC of the rating group: one grant, one hold
            first = answers[merged_into]
            answers.append(MSCCAnswer(result_code=first.result_code, rating_group=m.rating_group,
                                      service_identifier=m.service_identifiers[0] if m.service_identifiers else None))
    if final:
        for rg, st in sess.groups.items():
            close_group(tx, ctx.dbs, sess, rg, st, "NORMAL")
        sess.state, sess.closed_at = sessions.CLOSED, now
        adjust_open_sessions(tx, dbs, -1)
    if not active and not final:
        return sess, make_cca(ccr, cfg, C.DIAMETER_END_USER_SERVICE_DENIED, answers)
    result = message_result(answers)
    if rtype == INITIAL:
        if result != C.DIAMETER_SUCCESS and not any(map(_holds_or_used, sess.groups.values())):
            sess.groups.clear()  # nothing reserved, nothing used: no CDR, nothing to release
            sess.state, sess.closed_at = sessions.REFUSED, now
        else:
            adjust_open_sessions(tx, dbs, +1)
    return sess, single_service(ccr, make_cca(ccr, cfg, result, answers,
                                               failed_avp=failed_avp(result, answers, ccr)))


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


def close_stale(tx: Tx, ctx: Context, sess: Session) -> None:
    """The sweeper's close of a session that went quiet: release holds, CDRs say STALE."""
    close_session(tx, ctx.dbs, sess, "STALE")


def close_session(tx: Tx, dbs: dict[str, Any], sess: Session, cause: str) -> None:
    """End an open session from our side (gone quiet, or aborted by an operator): release what it
    holds and write its CDRs with `cause`; its next request gets 5002 (unknown session)."""
    for rg, st in sess.groups.items():
        close_group(tx, dbs, sess, rg, st, cause)
    sess.state, sess.closed_at = sessions.CLOSED, tx.now
