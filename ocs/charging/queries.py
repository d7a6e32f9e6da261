"""Commands over sessions and CDRs: an account's open sessions, aborting one, CDRs, usage sums.

Neither sessions nor CDRs have an index by account (one would cost every CCR a put), so these
walk their db in key order from a cursor and look at most SCAN records per call: one call holds
the engine's batch for a few milliseconds, and the caller (the API, the CLI) calls again with the
returned `next` until it is None. A CCR between two calls is charged at once; a listing is
therefore consistent per call, not across calls (what a paged listing always is).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack

from balance.schema import CDRS, SESSIONS
from balance.store import Tx
from ocs.billing.cdr import layout
from ocs.billing.cdr.record import COLUMNS
from ocs.charging import counters, credit, sessions
from ocs.charging.registry import CONFLICT, NOT_FOUND, READERS, STAFF, Refused, usable_key
from ocs.charging.registry import command as _command
from ocs.charging.registry import resolve as _resolve
from ocs.charging.usage_sums import UsageKey

SCAN = 4000  # records looked at per call
MAX_LIMIT = 1000
CDR_READERS = frozenset({"admin", "billing", "readonly"})  # crm sees balances, not usage
_U64 = struct.Struct(">Q")


def _session_view(sess: sessions.Session) -> dict[str, Any]:
    return {"id": sess.session_id, "account": sess.account_id,
            "subscription": sess.subscription_id, "plan": sess.plan, "currency": sess.currency,
            "tariff_version": sess.tariff_version, "origin_host": sess.origin_host,
            "started": sess.started, "last_seen": sess.seen,
            "groups": [{"rating_group": rg, "unit": g.unit, "used_units": g.total_units,
                        "amount": g.amount, "granted_units": g.granted if g.reserved else 0,
                        "closed": g.closed}
                       for rg, g in sorted(sess.groups.items())]}


@_command("session.list", READERS, writes=False, selfcare=True)
def session_list(tx: Tx, *, ident: str, after: str = "", limit: int = 100) -> dict[str, Any]:
    """Open sessions of one account, in Session-Id order, after the cursor `after`."""
    account_id = _resolve(tx, ident)
    limit = max(1, min(limit, MAX_LIMIT))
    cur = tx.read_txn.cursor(db=tx.dbs[SESSIONS])
    start = after.encode()
    found: list[dict[str, Any]] = []
    last, looked, more = after, 0, False
    if cur.set_range(start) if start else cur.first():
        for k, raw in cur.iternext():
            if k == start:
                continue
            if looked >= SCAN or len(found) >= limit:
                more = True
                break
            looked += 1
            last = bytes(k).decode()
            head = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            if head[0] != account_id or head[9] != sessions.OPEN:  # account_id, state
                continue
            found.append(_session_view(sessions.Session.unpack(last, raw)))
    return {"account": account_id, "sessions": found, "next": last if more else None}


@_command("session.abort", STAFF)
def session_abort(tx: Tx, *, session_id: str) -> dict[str, Any]:
    """End an open session now: its holds are released, its usage so far is charged in CDRs with
    termination cause ABORTED, and its next request is answered 5002 (unknown session). Telling
    the gateway (RAR/ASR) is the network side's job."""
    sess = sessions.load(tx.read_txn, tx.dbs, session_id) if usable_key(session_id) else None
    if sess is None:
        raise Refused(f"unknown session {session_id!r}", NOT_FOUND)
    if sess.state != sessions.OPEN:
        raise Refused(f"session {session_id!r} is not open", CONFLICT)
    view = _session_view(sess)
    credit.close_session(tx, tx.dbs, sess, "ABORTED")
    counters.adjust_open_sessions(tx, tx.dbs, -1)
    sessions.save(tx.write_txn, tx.dbs, sess, force=True)
    view["aborted_at"] = tx.now
    return view


def _cdr_view(cdr: Any) -> dict[str, Any]:
    return dict(zip(COLUMNS, dataclasses.astuple(cdr), strict=True))


def _matches(cdr: Any, account: str | None, since: int | None, until: int | None) -> bool:
    return ((account is None or cdr.account_id == account)
            and (since is None or cdr.end_time >= since)
            and (until is None or cdr.end_time < until))


def _walk(tx: Tx, account: str | None, session: str | None, since: int | None,
          until: int | None, after: int, limit: int) -> tuple[list[Any], int | None]:
    """(CDRs that match, the cursor to go on from or None at the end); `account` resolved."""
    if session is not None:  # through the session index: small, done in one call
        if not usable_key(session):
            return [], None
        got = [c for c in layout.by_session(tx.read_txn, tx.dbs, session)
               if c.cdr_id > after and _matches(c, account, since, until)]
        return got[:limit], (got[limit - 1].cdr_id if len(got) > limit else None)
    cur = tx.read_txn.cursor(db=tx.dbs[CDRS])
    out: list[Any] = []
    looked = 0
    last = after
    if cur.set_range(_U64.pack(after + 1)):
        for k, raw in cur.iternext():
            if looked >= SCAN or len(out) >= limit:
                return out, last
            looked += 1
            cdr = layout.unpack(raw)
            last = layout.id_of(k)
            if _matches(cdr, account, since, until):
                out.append(cdr)
    return out, None


@_command("cdr.list", CDR_READERS, writes=False, selfcare=True)
def cdr_list(tx: Tx, *, ident: str | None = None, session: str | None = None,
             since: int | None = None, until: int | None = None, after: int = 0,
             limit: int = 100) -> dict[str, Any]:
    """CDRs in id order after `after`, by account (`ident`), session and end time [since, until)."""
    account = None if ident is None else _resolve(tx, ident)
    got, nxt = _walk(tx, account, session, since, until, after, max(1, min(limit, MAX_LIMIT)))
    return {"cdrs": [_cdr_view(c) for c in got], "next": nxt}


@_command("usage.summary", CDR_READERS, writes=False, selfcare=True)
def usage_summary(tx: Tx, *, ident: str, since: int | None = None, until: int | None = None,
                  after: int = 0) -> dict[str, Any]:
    """Sums per (rating group, unit) of one account's CDRs ending in [since, until): a part of
    them (SCAN at a time); the caller adds the parts up, following `next`."""
    account = _resolve(tx, ident)
    got, nxt = _walk(tx, account, None, since, until, after, SCAN)
    groups: dict[UsageKey, dict[str, Any]] = {}
    for c in got:
        g = groups.setdefault((c.rating_group, c.unit, c.currency), {
            "rating_group": c.rating_group, "unit": c.unit, "cdrs": 0, "used_units": 0,
            "bundle_units": 0, "amount": 0, "currency": c.currency})
        g["cdrs"] += 1
        g["used_units"] += c.used_units
        g["bundle_units"] += c.bundle_units
        g["amount"] += c.amount
    return {"account": account, "groups": list(groups.values()), "next": nxt}
