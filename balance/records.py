"""Records of the balance store, their msgpack layouts and the keys they live under.

Values are positional msgpack arrays (smaller and faster than maps); the field order below is the
on-disk format, append new fields at the end only. Keys are chosen for range scans: everything of an
account shares the prefix `account_id NUL`, integers are big-endian so byte order is numeric order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import msgpack

from balance.errors import InvalidArgument

UNITS = ("seconds", "octets", "events", "money")
STATUSES = ("active", "suspended", "closed")
NO_RG = 0xFFFFFFFF  # rating group "none" (a CCR without MSCC rating group)

# One Packer for the process: Packer.pack runs entirely under the GIL for the plain types we store
# (no Python callbacks), so threads cannot interleave inside it; 3x cheaper than msgpack.packb.
_pack: Callable[[object], bytes] = msgpack.Packer(autoreset=True).pack
_unpack = msgpack.unpackb
pack = _pack


def text_key(ident: str) -> bytes:
    """Ids are non-empty strings without NUL (NUL separates key parts)."""
    if not isinstance(ident, str) or not ident or "\0" in ident:
        raise InvalidArgument(f"bad id {ident!r}")
    return ident.encode()


def rg_bytes(rating_group: int | None) -> bytes:
    if rating_group is None:
        return b"\xff\xff\xff\xff"
    if not isinstance(rating_group, int) or not 0 <= rating_group < NO_RG:
        raise InvalidArgument(f"bad rating group {rating_group!r}")
    return rating_group.to_bytes(4, "big")


def reservation_key(session_id: str, rating_group: int | None) -> bytes:
    return text_key(session_id) + b"\0" + rg_bytes(rating_group)


def split_reservation_key(key: bytes) -> tuple[str, int | None]:
    session, rg = key[:-5].decode(), int.from_bytes(key[-4:], "big")
    return session, (None if rg == NO_RG else rg)


def child_key(account_id: str, suffix: bytes) -> bytes:
    return account_id.encode() + b"\0" + suffix


def be8(n: int) -> bytes:
    return n.to_bytes(8, "big")


@dataclass(slots=True)
class Account:
    id: str
    currency: str
    balance: int
    credit_limit: int = 0
    reserved: int = 0
    plan: str = "default"
    status: str = "active"
    aliases: list[str] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    seq: int = 0           # last ledger sequence number
    bundle_seq: int = 0    # last bundle number handed out
    nbundles: int = 0      # live bundles (lets the hot path skip the bundle scan)
    ledger_tail: int = 0   # ledger position of its last journal entry (0: none)

    @property
    def available(self) -> int:
        """Money that can still be reserved or debited: balance + credit limit - held."""
        return self.balance + self.credit_limit - self.reserved

    def pack(self) -> bytes:
        return _pack([self.currency, self.balance, self.credit_limit, self.reserved, self.plan,
                      self.status, self.aliases, self.created, self.updated, self.seq,
                      self.bundle_seq, self.nbundles, self.ledger_tail])

    @classmethod
    def unpack(cls, account_id: str, raw: bytes) -> Account:
        return cls(account_id, *_unpack(raw))


@dataclass(slots=True)
class Bundle:
    account_id: str
    id: str
    unit: str
    remaining: int
    reserved: int = 0
    rating_groups: list[int] = field(default_factory=list)  # empty = all rating groups
    valid_from: int | None = None
    expires: int | None = None
    priority: int = 0      # higher is drawn first
    created: int = 0
    initial: int = 0       # the amount it was sold with (0: a bundle stored before it was kept)

    @property
    def available(self) -> int:
        return self.remaining - self.reserved

    def applies(self, unit: str, rating_group: int | None, now: int) -> bool:
        return (self.unit == unit
                and (not self.rating_groups or rating_group in self.rating_groups)
                and (self.valid_from is None or self.valid_from <= now)
                and (self.expires is None or now < self.expires))

    def order(self) -> tuple[int, int, int]:
        """Draw order: priority (high first), then soonest expiry, then oldest."""
        return (-self.priority, self.expires if self.expires is not None else 1 << 62, int(self.id))

    def key(self) -> bytes:
        return child_key(self.account_id, self.id.encode())

    def pack(self) -> bytes:
        return _pack([self.unit, self.remaining, self.reserved, self.rating_groups,
                      self.valid_from, self.expires, self.priority, self.created, self.initial])

    @classmethod
    def unpack(cls, key: bytes, raw: bytes) -> Bundle:
        account, _, bid = key.partition(b"\0")
        return cls(account.decode(), bid.decode(), *_unpack(raw))


@dataclass(slots=True)
class Reservation:
    session_id: str
    rating_group: int | None
    account_id: str
    unit: str
    units_granted: int
    holds: list[list[Any]]       # [[bundle_id, amount], ...] held on bundles, in each bundle's own unit
    money_held: int         # micro-units held on the account balance
    expires_at: int
    rate_ref: object = None  # the rate it was granted at: opaque to the store
    created: int = 0
    filed_at: int = 0        # the instant it is filed under in resv_expiry (<= expires_at; 0 = expires_at)
    rkey: bytes = field(default=b"", repr=False, compare=False)  # its key, once known (not stored)

    def key(self) -> bytes:
        if not self.rkey:
            self.rkey = reservation_key(self.session_id, self.rating_group)
        return self.rkey

    @property
    def index_at(self) -> int:
        return self.filed_at or self.expires_at

    def pack(self) -> bytes:
        return _pack([self.account_id, self.unit, self.units_granted, self.holds, self.money_held,
                      self.expires_at, self.rate_ref, self.created, self.filed_at])

    @classmethod
    def unpack(cls, key: bytes, raw: bytes) -> Reservation:
        session, rg = split_reservation_key(key)
        res = cls(session, rg, *_unpack(raw))
        res.rkey = key
        return res


@dataclass(slots=True)
class LedgerEntry:
    """One journal line. delta changes balance, reserved_delta changes reserved; bundles lists
    [bundle_id, remaining_delta, reserved_delta]. Summing delta over an account gives its balance.

    The ledger db is keyed by a global position (be8, appended in commit order), not by account:
    a batch's entries then land on one or two fresh pages instead of one scattered leaf per account
    (measured: half the commit cost of the store benchmark). An account's entries are chained by
    `prev` from Account.ledger_tail; `seq` numbers them per account from 1."""
    account_id: str
    seq: int
    prev: int               # position of the account's previous entry (0: this is its first)
    ts: int
    kind: str               # create topup adjust reserve commit release expiry debit refund
    delta: int
    balance: int            # balance after
    reserved_delta: int
    reserved: int           # reserved after
    bundles: list[list[Any]]
    session_id: str | None
    rating_group: int | None
    ref: str | bytes | None  # the idempotency key of the request
    reason: str
    position: int = 0       # its key in the ledger db

    @classmethod
    def unpack(cls, key: bytes, raw: bytes) -> LedgerEntry:
        entry: LedgerEntry = cls(*_unpack(raw))  # the stored fields: all but `position`
        entry.position = int.from_bytes(key, "big")
        return entry


def pack_ledger(account_id: str, seq: int, prev: int, ts: int, kind: str, delta: int,
                balance: int, reserved_delta: int, reserved: int, bundles: list[list[Any]],
                session_id: str | None, rating_group: int | None, ref: str | bytes | None,
                reason: str) -> bytes:
    return _pack([account_id, seq, prev, ts, kind, delta, balance, reserved_delta, reserved,
                  bundles, session_id, rating_group, ref, reason])


@dataclass(slots=True)
class ReserveResult:
    units_granted: int
    bundle_units: int    # of those, units held on bundles of the requested unit
    money_held: int      # micro-units held (money bundles + balance)
    limited: bool        # the last grant the balance allows: fewer units than asked for, or
    #                      nothing (no bundle unit, no money for a unit) left for another
    expires_at: int


@dataclass(slots=True)
class CommitResult:
    bundle_units_used: int
    money_units: int     # units that were priced
    money_debited: int   # micro-units taken (money bundles + balance)
    shortfall: int       # micro-units priced but not collected (nothing left)
    balance: int         # balance after
    from_balance: int = 0  # of money_debited, what the balance paid (the rest: money bundles)


@dataclass(slots=True)
class ReleaseResult:
    bundle_units: int    # bundle units returned (any unit)
    money_released: int  # micro-units returned (money bundles + balance)


# Outcomes stored with idempotency keys: tag + positional fields.
_OUTCOMES: dict[str, type] = {"A": Account, "R": ReserveResult, "C": CommitResult, "L": ReleaseResult}
_TAGS = {cls: tag for tag, cls in _OUTCOMES.items()}


def pack_outcome(value: object) -> object:
    if isinstance(value, tuple):  # several results of one op (commit_and_reserve)
        return ["T", *(pack_outcome(v) for v in value)]
    tag = _TAGS.get(type(value))
    if tag is None or not is_dataclass(value):  # every tagged type is a dataclass
        return value  # int / str / None
    return [tag, *(getattr(value, f.name) for f in fields(value))]


def unpack_outcome(value: object) -> object:
    if isinstance(value, list) and value and isinstance(value[0], str):
        if value[0] == "T":
            return tuple(unpack_outcome(v) for v in value[1:])
        if value[0] in _OUTCOMES:
            return _OUTCOMES[value[0]](*value[1:])
    return value
