"""Threshold notifications that fire once per crossing: `balance.low` and `credit.limit_reached`.

A low-balance threshold is set per plan or per account (the account's wins). When a debit or a
negative adjustment leaves the balance below it, `balance.low` is emitted and the account is
marked fired; it fires again only after a top-up (or positive adjustment) has brought the balance
back to the threshold or above, which re-arms it. `credit.limit_reached` (a 4012 was answered)
fires once likewise and is re-armed by any credit. The marks live in LMDB beside the thresholds,
written in the transaction of the change, so a crash never re-fires or loses one.

The thresholds are read on every charging request, so each process keeps them in memory, keyed
by a generation token that every change replaces (random, so a rolled-back change's token is
never seen again): a request costs one get of the token, not a threshold lookup per account.
"""

from __future__ import annotations

import os
from typing import Any

from balance.records import Account, Bundle
from balance.schema import ALERTS, META, META_ALERTS_GEN, pack_i64, unpack_i64
from ocs.charging import outbox

ACCOUNT, PLAN, FIRED = b"a", b"p", b"f"
LOW, LIMIT, BUNDLE_USED, BUNDLE_GONE = b"l", b"c", b"u", b"x"  # the fired marks' kinds
BUNDLE_PERCENT = 80  # bundle.threshold: this share of a bundle's units used

_cache: dict[int, tuple[bytes | None, dict[bytes, int]]] = {}


def _thresholds(txn: Any, dbs: dict[str, Any]) -> dict[bytes, int]:
    gen = txn.get(META_ALERTS_GEN, db=dbs[META])
    db = dbs[ALERTS]
    hit = _cache.get(id(db))
    if hit is not None and hit[0] == gen:
        return hit[1]
    table = {k: unpack_i64(v) for k, v in txn.cursor(db=db) if k[:1] in (ACCOUNT, PLAN)}
    _cache[id(db)] = (gen, table)
    return table


def threshold(txn: Any, dbs: dict[str, Any], account_id: str, plan: str) -> int | None:
    table = _thresholds(txn, dbs)
    if not table:
        return None
    found = table.get(ACCOUNT + account_id.encode())
    return table.get(PLAN + plan.encode()) if found is None else found


def set_threshold(txn: Any, dbs: dict[str, Any], *, account: str | None, plan: str | None,
                  amount: int | None) -> None:
    """Set (or with None clear) the low-balance threshold of an account or a plan."""
    key = ACCOUNT + account.encode() if account is not None else PLAN + (plan or "").encode()
    if amount is None:
        txn.delete(key, db=dbs[ALERTS])
    else:
        txn.put(key, pack_i64(amount), db=dbs[ALERTS])
    txn.put(META_ALERTS_GEN, os.urandom(8), db=dbs[META])


def thresholds(txn: Any, dbs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k, v in txn.cursor(db=dbs[ALERTS]):
        if k[:1] in (ACCOUNT, PLAN):
            out.append({"account" if k[:1] == ACCOUNT else "plan": k[1:].decode(),
                        "low_balance": unpack_i64(v)})
    return out


def _fired(txn: Any, dbs: dict[str, Any], kind: bytes, account_id: str) -> bool:
    return txn.get(FIRED + kind + account_id.encode(), db=dbs[ALERTS]) is not None


def _mark(txn: Any, dbs: dict[str, Any], kind: bytes, account_id: str) -> None:
    txn.put(FIRED + kind + account_id.encode(), b"", db=dbs[ALERTS])


def after_debit(txn: Any, dbs: dict[str, Any], acct: Account, now: int) -> None:
    """A debit may have crossed the account's threshold: fire balance.low once."""
    limit = threshold(txn, dbs, acct.id, acct.plan)
    if limit is None or acct.balance >= limit or _fired(txn, dbs, LOW, acct.id):
        return
    _mark(txn, dbs, LOW, acct.id)
    outbox.emit(txn, dbs, "balance.low", at=now, account=acct.id,
                data={"balance": acct.balance, "threshold": limit, "currency": acct.currency})


def after_credit(txn: Any, dbs: dict[str, Any], acct: Account) -> None:
    """Money came in: re-arm credit.limit_reached, and balance.low once at the threshold again."""
    txn.delete(FIRED + LIMIT + acct.id.encode(), db=dbs[ALERTS])
    limit = threshold(txn, dbs, acct.id, acct.plan)
    if limit is None or acct.balance >= limit:
        txn.delete(FIRED + LOW + acct.id.encode(), db=dbs[ALERTS])


def rearm(txn: Any, dbs: dict[str, Any], account_id: str) -> None:
    txn.delete(FIRED + LOW + account_id.encode(), db=dbs[ALERTS])


def limit_reached(txn: Any, dbs: dict[str, Any], account_id: str, session_id: str,
                  now: int) -> None:
    if _fired(txn, dbs, LIMIT, account_id):
        return
    _mark(txn, dbs, LIMIT, account_id)
    outbox.emit(txn, dbs, "credit.limit_reached", at=now, account=account_id,
                data={"session": session_id})



def after_bundle_use(txn: Any, dbs: dict[str, Any], bundles: list[Bundle], now: int) -> None:
    """A request drew on the account's bundles: bundle.threshold once a bundle has used
    BUNDLE_PERCENT of its units, bundle.exhausted once it has none left; each once per bundle."""
    for b in bundles:
        if b.initial <= 0:
            continue  # stored before bundles kept their initial amount: no share to compute
        if (b.expires is not None and b.expires <= now) or (b.valid_from or 0) > now:
            continue  # kept past its expiry for a hold, or not started: not what was drawn
        mark = f"{b.account_id}\0{b.id}"
        used = b.initial - b.remaining
        data = {"bundle": b.id, "unit": b.unit, "initial": b.initial, "remaining": b.remaining,
                "rating_groups": b.rating_groups}
        if used * 100 >= b.initial * BUNDLE_PERCENT and not _fired(txn, dbs, BUNDLE_USED, mark):
            _mark(txn, dbs, BUNDLE_USED, mark)
            outbox.emit(txn, dbs, "bundle.threshold", at=now, account=b.account_id,
                        data={**data, "percent_used": used * 100 // b.initial})
        if b.remaining <= 0 and not _fired(txn, dbs, BUNDLE_GONE, mark):
            _mark(txn, dbs, BUNDLE_GONE, mark)
            outbox.emit(txn, dbs, "bundle.exhausted", at=now, account=b.account_id, data=data)
