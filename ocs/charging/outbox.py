"""The webhook outbox: events written in the transaction of their cause, and their deliveries.

An event exists exactly when its cause does: `emit` appends it (and one delivery per matching
subscription) in the caller's write transaction, so a rolled-back change never announces itself
and a committed one is never lost. A delivery worker (ocs.api.webhooks) claims due deliveries,
POSTs them and reports each outcome; a claim is a lease, so a worker killed mid-POST leaves the
delivery due again when the lease runs out: at least once, never zero times. Receivers
deduplicate by the event's id, `evt_` + its outbox position, which never changes.

Event (msgpack map): type, at (unix s), account (or None), data (a map of plain values); its
id is derived from its position, never stored.
Subscription: id (`wh_N`), url, events (types, or ["*"]), secret (the HMAC key; shown once),
created. Delivery (msgpack array): state, attempts, next_at ms, first_at ms, last_at ms,
last_status (HTTP status or 0), last_error. States: pending (due at next_at, or leased until
then), delivered, failed (no success within RETRY_FOR), cancelled (its subscription deleted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from balance.schema import (
    DELIVERIES,
    DELIVERY_DUE,
    META,
    META_WEBHOOK_SEQ,
    OUTBOX,
    WEBHOOKS,
    pack_be8,
    pack_i64,
    unpack_i64,
)
from balance.store import append_at_tail

EVENT_TYPES: Final = ("balance.low", "bundle.threshold", "bundle.exhausted", "credit.limit_reached",
                      "final_unit.granted", "account.suspended", "account.activated",
                      "account.closed", "topup.applied", "invoice.issued", "tariff.activated")
PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"
RETRY_FOR: Final = 24 * 3600 * 1000   # ms from the first attempt's due time: then it has failed
MAX_DELAY: Final = 3600 * 1000        # backoff never waits longer than this between attempts


def _pack(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def event_id(pos: int) -> str:
    return f"evt_{pos}"


@dataclass(slots=True)
class Delivery:
    state: str
    attempts: int
    next_at: int
    first_at: int
    last_at: int = 0
    last_status: int = 0
    last_error: str = ""

    def pack(self) -> bytes:
        return _pack([self.state, self.attempts, self.next_at, self.first_at, self.last_at,
                      self.last_status, self.last_error])

    @classmethod
    def unpack(cls, raw: bytes) -> Delivery:
        return cls(*_unpack(raw))


def _dkey(sub: str, pos: int) -> bytes:
    return sub.encode() + b"\0" + pack_be8(pos)


def _split(dkey: bytes) -> tuple[str, int]:
    sub, _, pos = dkey.partition(b"\0")
    return sub.decode(), int.from_bytes(pos, "big")


def _due_key(at_ms: int, dkey: bytes) -> bytes:
    return pack_be8(max(at_ms, 0)) + dkey


# -- subscriptions ------------------------------------------------------------------------------

def subscriptions(txn: Any, dbs: dict[str, Any]) -> list[dict[str, Any]]:
    return [_unpack(v) for _k, v in txn.cursor(db=dbs[WEBHOOKS])]


def public(sub: dict[str, Any]) -> dict[str, Any]:
    """A subscription as shown after its creation: everything but its secret."""
    return {k: v for k, v in sub.items() if k != "secret"}


def subscribe(txn: Any, dbs: dict[str, Any], *, url: str, events: list[str], secret: str,
              now: int) -> dict[str, Any]:
    raw = txn.get(META_WEBHOOK_SEQ, db=dbs[META])
    n = (unpack_i64(raw) if raw else 0) + 1
    txn.put(META_WEBHOOK_SEQ, pack_i64(n), db=dbs[META])
    sub_id = f"wh_{n}"
    sub = {"id": sub_id, "url": url, "events": sorted(set(events)), "secret": secret,
           "created": now}
    txn.put(sub_id.encode(), _pack(sub), db=dbs[WEBHOOKS])
    return sub


def unsubscribe(txn: Any, dbs: dict[str, Any], sub_id: str) -> dict[str, Any] | None:
    """Delete a subscription; its deliveries not yet made are cancelled (kept in the log)."""
    raw = txn.get(sub_id.encode(), db=dbs[WEBHOOKS])
    if raw is None:
        return None
    txn.delete(sub_id.encode(), db=dbs[WEBHOOKS])
    prefix = sub_id.encode() + b"\0"
    cur = txn.cursor(db=dbs[DELIVERIES])
    if cur.set_range(prefix):
        for k, v in list(cur):
            if not k.startswith(prefix):
                break
            d = Delivery.unpack(v)
            if d.state == PENDING:
                txn.delete(_due_key(d.next_at, k), db=dbs[DELIVERY_DUE])
                d.state = CANCELLED
                txn.put(k, d.pack(), db=dbs[DELIVERIES])
    out: dict[str, Any] = _unpack(raw)
    return out


# -- events -------------------------------------------------------------------------------------

def emit(txn: Any, dbs: dict[str, Any], kind: str, *, at: int, account: str | None,
         data: dict[str, Any]) -> int:
    """Append an event and a pending delivery (due now) to every subscription that wants it."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    pos = append_at_tail(txn, dbs[OUTBOX],
                         _pack({"type": kind, "at": at, "account": account, "data": data}))
    due = at * 1000
    for sub in subscriptions(txn, dbs):
        if "*" in sub["events"] or kind in sub["events"]:
            dkey = _dkey(sub["id"], pos)
            txn.put(dkey, Delivery(PENDING, 0, due, due).pack(), db=dbs[DELIVERIES])
            txn.put(_due_key(due, dkey), b"", db=dbs[DELIVERY_DUE])
    return pos


def _event(pos: int, raw: bytes) -> dict[str, Any]:
    """A stored event with its id, which is derived from its position and never stored."""
    return {"id": event_id(pos), **_unpack(raw)}


def event(txn: Any, dbs: dict[str, Any], pos: int) -> dict[str, Any] | None:
    raw = txn.get(pack_be8(pos), db=dbs[OUTBOX])
    return None if raw is None else _event(pos, raw)


def events(txn: Any, dbs: dict[str, Any], *, after: int = 0, kind: str | None = None,
           account: str | None = None, limit: int = 100) -> Iterator[dict[str, Any]]:
    cur = txn.cursor(db=dbs[OUTBOX])
    if not cur.set_range(pack_be8(after + 1)):
        return
    n = 0
    for k, v in cur:
        e = _event(int.from_bytes(k, "big"), v)
        if kind not in (None, e["type"]) or account not in (None, e["account"]):
            continue
        yield e
        n += 1
        if n >= limit:
            return


# -- the delivery worker's side -----------------------------------------------------------------

def next_due(txn: Any, dbs: dict[str, Any]) -> int | None:
    """When the earliest pending delivery is due (ms), or None when nothing is pending."""
    cur = txn.cursor(db=dbs[DELIVERY_DUE])
    return int.from_bytes(cur.key()[:8], "big") if cur.first() else None


def claim(txn: Any, dbs: dict[str, Any], *, now_ms: int, limit: int,
          lease_ms: int) -> list[dict[str, Any]]:
    """Lease up to `limit` deliveries due by `now_ms`: each is due again at now + lease unless
    its outcome is reported first. Returns what the worker needs to POST each one."""
    cur = txn.cursor(db=dbs[DELIVERY_DUE])
    taken: list[bytes] = []
    if cur.first():
        for k, _v in cur:
            if int.from_bytes(k[:8], "big") > now_ms or len(taken) >= limit:
                break
            taken.append(k)
    out: list[dict[str, Any]] = []
    subs = {s["id"]: s for s in subscriptions(txn, dbs)}
    for k in taken:
        dkey = k[8:]
        txn.delete(k, db=dbs[DELIVERY_DUE])
        raw = txn.get(dkey, db=dbs[DELIVERIES])
        if raw is None:
            continue
        d = Delivery.unpack(raw)
        sub_id, pos = _split(dkey)
        sub, ev = subs.get(sub_id), event(txn, dbs, pos)
        if sub is None or ev is None:
            d.state = CANCELLED
            txn.put(dkey, d.pack(), db=dbs[DELIVERIES])
            continue
        d.next_at = now_ms + lease_ms
        txn.put(dkey, d.pack(), db=dbs[DELIVERIES])
        txn.put(_due_key(d.next_at, dkey), b"", db=dbs[DELIVERY_DUE])
        out.append({"subscription": sub_id, "position": pos, "url": sub["url"],
                    "secret": sub["secret"], "event": ev})
    return out


def backoff(attempts: int, base_ms: int) -> int:
    """The wait after `attempts` failed attempts: base, 2 base, 4 base ... at most MAX_DELAY."""
    return int(min(base_ms * (2 ** min(max(attempts - 1, 0), 40)), MAX_DELAY))


def report(txn: Any, dbs: dict[str, Any], *, subscription: str, position: int, ok: bool,
           status: int, error: str, now_ms: int, base_ms: int) -> str | None:
    """Record one attempt's outcome; returns the delivery's new state (None: no such delivery,
    or one already settled, as after a lease ran out and another attempt reported first)."""
    dkey = _dkey(subscription, position)
    raw = txn.get(dkey, db=dbs[DELIVERIES])
    if raw is None:
        return None
    d = Delivery.unpack(raw)
    if d.state != PENDING:
        return None
    txn.delete(_due_key(d.next_at, dkey), db=dbs[DELIVERY_DUE])
    d.attempts += 1
    d.last_at, d.last_status, d.last_error = now_ms, status, error[:200]
    if ok:
        d.state = DELIVERED
    else:
        d.next_at = now_ms + backoff(d.attempts, base_ms)
        if d.next_at - d.first_at > RETRY_FOR:
            d.state = FAILED
        else:
            txn.put(_due_key(d.next_at, dkey), b"", db=dbs[DELIVERY_DUE])
    txn.put(dkey, d.pack(), db=dbs[DELIVERIES])
    return d.state


def deliveries(txn: Any, dbs: dict[str, Any], *, subscription: str | None = None,
               state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    cur = txn.cursor(db=dbs[DELIVERIES])
    prefix = b"" if subscription is None else subscription.encode() + b"\0"
    out: list[dict[str, Any]] = []
    if not cur.set_range(prefix):
        return out
    for k, v in cur:
        if not k.startswith(prefix):
            break
        d = Delivery.unpack(v)
        if state not in (None, d.state):
            continue
        sub_id, pos = _split(k)
        ev = event(txn, dbs, pos) or {}
        out.append({"subscription": sub_id, "event": event_id(pos), "type": ev.get("type"),
                    "account": ev.get("account"), "state": d.state, "attempts": d.attempts,
                    "next_at": d.next_at, "last_at": d.last_at, "last_status": d.last_status,
                    "last_error": d.last_error})
        if len(out) >= limit:
            break
    return out


def depth(txn: Any, dbs: dict[str, Any]) -> int:
    """For the metrics: deliveries not yet made (due, or leased to a worker)."""
    n: int = txn.stat(dbs[DELIVERY_DUE])["entries"]
    return n
