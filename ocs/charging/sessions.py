"""Credit-control session state in LMDB, so sessions survive a restart and duplicates replay exactly.

dbs (all written inside the request's own write transaction):
- "sessions":    session_id -> msgpack Session. It keeps the encoded answers to the session's last
  requests (as many as fit in ANSWER_BYTES) with their (CC-Request-Number, Origin-Host, End-to-End-Id): a retransmission,
  recognised by (Session-Id, CC-Request-Number) or within its session by (Origin-Host,
  End-to-End-Id), gets the first answer again. The record is rewritten by every request anyway, so
  keeping them there costs no extra LMDB page. It also records which request numbers were applied
  (a low-water mark and the numbers above it), so a late request is applied once and never refused.
- "session_due": b"o" + last activity (4 bytes BE) + session_id for open sessions, b"c" + closed
  instant + session_id for closed and refused ones -> b"". The sweeper walks each part in time order up to
  now - timeout (open) or now - retention (closed); the instants do not depend on settings, so a
  restart with another --session-timeout still finds every session a crash left open. An open key
  never says later than the real last activity (it may say earlier: the sweeper then re-files it),
  so rewriting it only when the activity moved by DUE_STEP keeps puts rare.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from typing import TypeAlias

    import lmdb

    Txn: TypeAlias = lmdb.Transaction[bytes]  # a Tx's read_txn to read, its write_txn to write

_U32 = struct.Struct(">I")
Dbs = dict[str, Any]           # db name -> lmdb handle (ocs.charging.context.Context.dbs)
DUE_STEP = 10  # seconds
# Answers kept for replay: the newest first, at least ANSWERS_MIN, then as many as fit in
# ANSWER_BYTES. Past ~2 KB a record leaves its B-tree leaf for overflow pages that LMDB reallocates
# on every write (a 20-update data session slowed the whole server down measurably).
ANSWERS_MIN = 2
ANSWER_BYTES = 1280
SEEN_ABOVE_MAX = 64  # request numbers tracked above the contiguous low-water mark

# REFUSED: a CCR-I answered with an error before any quota was granted or usage charged. Its record
# only keeps the answer for retransmissions (until dedup_retention, like a closed session's): it is
# not open, not counted in open_sessions, never stale, and a later CCR-I with a new number reopens it.
OPEN, CLOSED, REFUSED = 0, 1, 2


@dataclass(slots=True)
class RatingGroupState:
    """Cumulative usage of one (session, rating group): the basis of cumulative rating."""

    unit: str
    total_units: int = 0      # all units used so far
    money_units: int = 0      # of them, the ones paid with money (rated cumulatively)
    bundle_units: int = 0
    amount: int = 0           # micro-units debited so far
    first_ts: int = 0
    granted_at: int = 0       # when the quota now being used was granted (start instant for bands)
    period_used: int = 0      # usage in the billing period before this session (for tiers)
    service_identifier: int | None = None
    reserved: bool = False    # a reservation is open in the balance store
    closed: bool = False      # its CDR is written (FINAL reported or session ended)
    granted: int = 0          # units of the open grant
    fee_paid: bool = False    # an earlier burst (before a FINAL) of this session paid the connect fee

    def pack(self) -> list[Any]:
        return [self.unit, self.total_units, self.money_units, self.bundle_units, self.amount,
                self.first_ts, self.granted_at, self.period_used, self.service_identifier,
                self.reserved, self.closed, self.granted, self.fee_paid]


@dataclass(slots=True)
class Session:
    session_id: str
    account_id: str
    subscription_id: str
    plan: str
    currency: str
    tariff_version: int
    origin_host: str
    started: int
    seen: int
    due: int = 0              # the instant filed in "session_due" (under the prefix of its state)
    state: int = OPEN
    closed_at: int = 0
    seen_low: int = -1       # every CC-Request-Number <= seen_low has been applied
    seen_above: list[int] = field(default_factory=list)  # applied numbers > seen_low (gaps below)
    answers: list[list[Any]] = field(default_factory=list)  # [request number, origin host, e2e, CCA bytes]
    filed_state: int = OPEN   # the state whose prefix `due` is filed under
    groups: dict[int, RatingGroupState] = field(default_factory=dict)

    @property
    def last_number(self) -> int:
        return max(self.seen_above) if self.seen_above else self.seen_low

    def has_seen(self, number: int) -> bool:
        return number <= self.seen_low or number in self.seen_above

    def mark_seen(self, number: int) -> None:
        """Record an applied request number; late numbers fill gaps (failover can reorder)."""
        if self.has_seen(number):
            return
        above = self.seen_above
        above.append(number)
        above.sort()
        while above and above[0] == self.seen_low + 1:
            self.seen_low = above.pop(0)
        if len(above) > SEEN_ABOVE_MAX:  # a gap that never fills: give up waiting for it
            self.seen_low = above[len(above) - SEEN_ABOVE_MAX - 1]
            del above[:len(above) - SEEN_ABOVE_MAX]

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb([
            self.account_id, self.subscription_id, self.plan, self.currency, self.tariff_version,
            self.origin_host, self.started, self.seen, self.due, self.state, self.closed_at,
            self.seen_low, self.seen_above, self.answers, self.filed_state, {rg: g.pack() for rg, g in self.groups.items()},
        ], use_bin_type=True)
        return packed

    @classmethod
    def unpack(cls, session_id: str, raw: bytes) -> Session:
        (account_id, sub, plan, currency, version, origin_host, started, seen, due, state, closed_at,
         seen_low, seen_above, answers, filed_state, groups) = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        return cls(session_id, account_id, sub, plan, currency, version, origin_host, started, seen,
                   due, state, closed_at, seen_low, seen_above, answers, filed_state,
                   {int(rg): RatingGroupState(*g) for rg, g in groups.items()})


def due_key(state: int, instant: int, session_id: str) -> bytes:
    return (b"o" if state == OPEN else b"c") + _U32.pack(max(0, min(instant, 0xFFFFFFFF))) + session_id.encode()


def load(txn: Txn, dbs: Dbs, session_id: str) -> Session | None:
    raw = txn.get(session_id.encode(), db=dbs["sessions"])
    return None if raw is None else Session.unpack(session_id, raw)


def save(txn: Txn, dbs: Dbs, sess: Session, force: bool = False) -> None:
    """Store the session and keep its index key right (see the module docstring)."""
    sid = sess.session_id
    instant = sess.seen if sess.state == OPEN else sess.closed_at
    key = due_key(sess.state, instant, sid)
    if (force or sess.due == 0 or sess.filed_state != sess.state or instant - sess.due >= DUE_STEP
            or (sess.state != OPEN and instant != sess.due)):  # a closed key never says earlier
        if sess.due:
            txn.delete(due_key(sess.filed_state, sess.due, sid), db=dbs["session_due"])
        txn.put(key, b"", db=dbs["session_due"])
        sess.due, sess.filed_state = instant, sess.state
    txn.put(sid.encode(), sess.pack(), db=dbs["sessions"])


def find_answer(sess: Session, request_number: int) -> bytes | None:
    """The answer first sent to this request, if it is a retransmission of one we answered.

    Within a session a retransmission repeats its CC-Request-Number (and its End-to-End id, which
    RFC 6733 uses for duplicates across sessions). A matching End-to-End id with a new number is a
    client reusing ids too early: replaying would drop the new request's usage, so it is applied."""
    for number, _host, _e2e, raw in sess.answers:
        if number == request_number:
            answer: bytes = raw
            return answer
    return None


def remember_answer(sess: Session, request_number: int, origin_host: str, end_to_end: int,
                    answer: bytes) -> None:
    answers = sess.answers
    answers.append([request_number, origin_host, end_to_end, answer])
    total = sum(len(a[3]) for a in answers)
    while len(answers) > ANSWERS_MIN and total > ANSWER_BYTES:
        total -= len(answers.pop(0)[3])


def purge(txn: Txn, dbs: Dbs, sess: Session) -> None:
    """Forget a closed session whose answers no longer need replaying."""
    txn.delete(sess.session_id.encode(), db=dbs["sessions"])
    if sess.due:
        txn.delete(due_key(sess.filed_state, sess.due, sess.session_id), db=dbs["session_due"])


def due_sessions(txn: Txn, dbs: Dbs, state: int, upto: int, limit: int) -> list[tuple[bytes, str]]:
    """Index keys of sessions in `state` (CLOSED: refused ones too) whose instant is <= upto, oldest first, at most `limit`."""
    prefix = b"o" if state == OPEN else b"c"
    out: list[tuple[bytes, str]] = []
    cur = txn.cursor(db=dbs["session_due"])
    if not cur.set_range(prefix):
        return out
    for k in cur.iternext(keys=True, values=False):
        if k[:1] != prefix or _U32.unpack_from(k, 1)[0] > upto or len(out) >= limit:
            break
        out.append((bytes(k), bytes(k[5:]).decode()))
    return out
