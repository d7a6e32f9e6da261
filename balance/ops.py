"""Balance operations: plain functions over a write `Tx`, composable inside one writer op.

Guarantees (TigerBeetle's two-phase transfers, applied to an OCS):
- every op validates and computes in memory first, then writes: when it raises, it wrote nothing;
- every mutating op takes an idempotency key (str/bytes, or None to opt out when the caller dedups
  itself): the first successful outcome is stored in the "idem" db in the same txn, and a repeat
  returns it unchanged and writes nothing. Failed ops store nothing, so they can be retried;
- every change of balance, reserved or a bundle appends one ledger entry (balance == sum of deltas);
- a reservation resolves at most once: commit (release_rest) / release / expiry delete it.
Reserving again for a (session, rating group) that already holds a reservation REPLACES it: the old
holds are released and the new request is granted afresh (Gy: each CCR-U re-requests quota).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from msgpack import unpackb

from balance.errors import (
    AccountBusy,
    AccountNotActive,
    CurrencyMismatch,
    DuplicateAccount,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
)
from balance.pricing import MONEY, Price, Pricing, pricing_of
from balance.records import (
    STATUSES,
    UNITS,
    Account,
    Bundle,
    CommitResult,
    ReleaseResult,
    Reservation,
    ReserveResult,
    be8,
    child_key,
    pack,
    pack_ledger,
    pack_outcome,
    reservation_key,
    text_key,
    unpack_outcome,
)
from balance.schema import (
    ACCOUNTS,
    ALIASES,
    BUNDLE_EXPIRY,
    BUNDLES,
    IDEM,
    META,
    META_IDEM_PURGE_AT,
    RESERVATIONS,
    RESV_ACCOUNT,
    RESV_EXPIRY,
)
from balance.store import Tx

Key = str | bytes | None
T = TypeVar("T")

REFILE_SECONDS = 300  # see _put_reservation
IDEM_RETENTION = 7 * 86400  # seconds an idempotency key is kept at least (see purge_idempotency)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


# -- idempotency ------------------------------------------------------------------------------

def _idem_key(key: str | bytes) -> bytes:
    k = key.encode() if isinstance(key, str) else bytes(key)
    if not k or len(k) > 500:
        raise InvalidArgument("idempotency key must be 1..500 bytes")
    return k


def _replayed(tx: Tx, key: Key, op: str, kind: type[T], what: list[Any] | None = None) -> T | None:
    """A retry's answer: the first outcome stored under `key`, or None when the key is new (or
    None). Every mutating op starts with it and, when it answers, returns that and writes
    nothing. `what` (the op's defining arguments) must match the first use's: a key reused for
    another amount is a conflict, not a retry to wave through."""
    if key is None:
        return None
    raw = tx.read_txn.get(_idem_key(key), db=tx.dbs[IDEM])
    if raw is None:
        return None
    first = unpackb(raw)
    first_op, outcome = first[1], unpack_outcome(first[2])
    if first_op != op:
        raise IdempotencyConflict(f"idempotency key {key!r} was used by {first_op}, not {op}")
    if what is not None and len(first) > 3 and first[3] != what:
        raise IdempotencyConflict(f"idempotency key {key!r} was used for {op} {first[3]}, not {what}")
    if not isinstance(outcome, kind):  # not written by this op: a damaged or foreign record
        raise IdempotencyConflict(f"idempotency key {key!r} holds a {type(outcome).__name__}, "
                                  f"not the {kind.__name__} {op} answers")
    return outcome


def _remember(tx: Tx, key: Key, op: str, outcome: object, what: list[Any] | None = None) -> None:
    if key is not None:
        record = [tx.now, op, pack_outcome(outcome)] + ([what] if what is not None else [])
        tx.write_txn.put(_idem_key(key), pack(record), db=tx.dbs[IDEM])


def purge_idempotency(tx: Tx, before: int, limit: int = 10_000) -> int:
    """Drop keys stored before `before` (unix s), scanning at most `limit` keys from where the last
    call stopped (cursor kept in "meta"), so a periodic call bounds its work. Returns keys dropped."""
    meta, db = tx.dbs[META], tx.dbs[IDEM]
    start = tx.read_txn.get(META_IDEM_PURGE_AT, db=meta) or b""
    cur = tx.read_txn.cursor(db=db)
    positioned = cur.set_range(start) if start else cur.first()
    dropped = scanned = 0
    doomed = []
    last = b""
    while positioned and scanned < limit:
        key, raw = cur.item()
        if unpackb(raw)[0] < before:
            doomed.append(key)
        last = key
        scanned += 1
        positioned = cur.next()
    t = tx.write_txn
    for key in doomed:
        dropped += t.delete(key, db=db)
    t.put(META_IDEM_PURGE_AT, (last + b"\0") if positioned else b"", db=meta)
    return dropped


# -- shared helpers ---------------------------------------------------------------------------

MAX_AMOUNT = 1 << 60  # units or micro-units in one op: sums of a few stay inside msgpack's int64


def _units(n: object, what: str = "units", *, positive: bool = False) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or (positive and n == 0):
        raise InvalidArgument(f"{what} must be a {'positive' if positive else 'non-negative'} integer, not {n!r}")
    if n > MAX_AMOUNT:
        raise InvalidArgument(f"{what} must be at most {MAX_AMOUNT}, not {n}")
    return n


def _unit(unit: str) -> str:
    if unit not in UNITS:
        raise InvalidArgument(f"unit must be one of {', '.join(UNITS)}, not {unit!r}")
    return unit


def _currency(code: object) -> str:
    if not isinstance(code, str) or not _CURRENCY.match(code):
        raise InvalidArgument(f"currency must be an ISO 4217 code like EUR, not {code!r}")
    return code


def _active(acct: Account) -> Account:
    if acct.status != "active":
        raise AccountNotActive(acct.id, acct.status)
    return acct


def _open(acct: Account) -> Account:
    if acct.status == "closed":
        raise AccountNotActive(acct.id, acct.status)
    return acct


def _save(tx: Tx, acct: Account) -> None:
    acct.updated = tx.now
    tx.write_txn.put(acct.id.encode(), acct.pack(), db=tx.dbs[ACCOUNTS])


def _journal(tx: Tx, acct: Account, kind: str, key: Key, *, delta: int = 0, reserved_delta: int = 0,
             bundles: list[list[Any]] | None = None, session_id: str | None = None,
             rating_group: int | None = None, reason: str = "") -> None:
    """Append one ledger entry (call before _save: it advances the account's sequence and tail)."""
    acct.seq += 1
    acct.ledger_tail = tx.append_ledger(
        pack_ledger(acct.id, acct.seq, acct.ledger_tail, tx.now, kind, delta, acct.balance,
                    reserved_delta, acct.reserved, bundles or [], session_id, rating_group, key,
                    reason))


class _Work:
    """An op's in-memory view of one account's bundles, written back once at the end."""

    __slots__ = ("bundles", "changed", "now", "tx")

    def __init__(self, tx: Tx, acct: Account) -> None:
        self.tx = tx
        self.now = tx.now
        self.changed: dict[str, list[int]] = {}
        self.bundles: dict[str, Bundle] = {}
        if acct.nbundles:
            for b in tx.bundles(acct.id):
                self.bundles[b.id] = b

    def applicable(self, unit: str, rating_group: int | None) -> list[Bundle]:
        if not self.bundles:
            return []
        found = [b for b in self.bundles.values() if b.applies(unit, rating_group, self.now)]
        found.sort(key=Bundle.order)
        return found

    def change(self, b: Bundle, remaining: int = 0, reserved: int = 0) -> None:
        b.remaining += remaining
        b.reserved += reserved
        d = self.changed.setdefault(b.id, [0, 0])
        d[0] += remaining
        d[1] += reserved

    def unhold(self, res: Reservation) -> tuple[int, int]:
        """Return a reservation's bundle holds; (non-money units, money) returned."""
        units = money = 0
        for bid, amount in res.holds:
            b = self.bundles.get(bid)
            if b is not None and amount:
                self.change(b, reserved=-amount)
                if b.unit == "money":
                    money += amount
                else:
                    units += amount
        res.holds = []
        return units, money

    def flush(self) -> list[list[Any]]:
        """Write changed bundles; the ledger's [bundle_id, remaining_delta, reserved_delta] list."""
        out = []
        db = self.tx.dbs[BUNDLES]
        for bid, (rem, res) in self.changed.items():
            if rem or res:
                b = self.bundles[bid]
                self.tx.write_txn.put(b.key(), b.pack(), db=db)
                out.append([bid, rem, res])
        return out


def _put_reservation(tx: Tx, res: Reservation, old: Reservation | None) -> None:
    """Store a reservation. Its expiry index key may stay at an earlier instant when the expiry
    only moved later by less than REFILE_SECONDS (a CCR-U extends it every time): one scattered
    index delete and insert fewer per request; expire_reservations re-files early keys."""
    t = tx.write_txn
    rkey = res.key()
    if old is None:
        t.put(child_key(res.account_id, rkey), b"", db=tx.dbs[RESV_ACCOUNT])
        res.filed_at = res.expires_at
    elif old.index_at <= res.expires_at < old.index_at + REFILE_SECONDS:
        res.filed_at = old.index_at
    else:
        t.delete(be8(old.index_at) + rkey, db=tx.dbs[RESV_EXPIRY])
        res.filed_at = res.expires_at
    if res.filed_at != (old.index_at if old is not None else None):
        t.put(be8(res.filed_at) + rkey, b"", db=tx.dbs[RESV_EXPIRY])
    t.put(rkey, res.pack(), db=tx.dbs[RESERVATIONS])


def _drop_reservation(tx: Tx, res: Reservation) -> None:
    t = tx.write_txn
    rkey = res.key()
    t.delete(rkey, db=tx.dbs[RESERVATIONS])
    t.delete(child_key(res.account_id, rkey), db=tx.dbs[RESV_ACCOUNT])
    t.delete(be8(res.index_at) + rkey, db=tx.dbs[RESV_EXPIRY])


def _find_reservation(tx: Tx, account_id: str, rkey: bytes) -> Reservation | None:
    raw = tx.read_txn.get(rkey, db=tx.dbs[RESERVATIONS])
    if raw is None:
        return None
    res = Reservation.unpack(rkey, raw)
    if res.account_id != account_id:
        raise InvalidArgument(f"session {res.session_id!r} holds a reservation on account "
                              f"{res.account_id!r}, not {account_id!r}")
    return res


# -- accounts ---------------------------------------------------------------------------------

def _claim_aliases(tx: Tx, account_id: str, aliases: list[str]) -> None:
    if len(set(aliases)) != len(aliases) or account_id in aliases:
        raise InvalidArgument(f"repeated alias in {aliases!r}")
    for alias in aliases:
        k = text_key(alias)
        if tx.read_txn.get(k, db=tx.dbs[ACCOUNTS]) is not None or \
                tx.read_txn.get(k, db=tx.dbs[ALIASES]) is not None:
            raise DuplicateAccount(alias)
    t = tx.write_txn
    for alias in aliases:
        t.put(alias.encode(), account_id.encode(), db=tx.dbs[ALIASES])


def create_account(tx: Tx, key: Key, *, account_id: str, currency: str, balance: int = 0,
                   credit_limit: int = 0, plan: str = "default", aliases: tuple[str, ...] | list[str] = (),
                   status: str = "active") -> Account:
    what = [account_id, currency, balance, credit_limit, plan, list(aliases)]
    if (hit := _replayed(tx, key, "create_account", Account, what)) is not None:
        return hit
    k = text_key(account_id)
    _currency(currency)
    if isinstance(balance, bool) or not isinstance(balance, int):
        raise InvalidArgument(f"balance must be integer micro-units, not {balance!r}")
    _units(credit_limit, "credit limit")
    if status not in STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if not isinstance(plan, str) or not plan:
        raise InvalidArgument(f"bad plan {plan!r}")
    if tx.read_txn.get(k, db=tx.dbs[ACCOUNTS]) is not None or \
            tx.read_txn.get(k, db=tx.dbs[ALIASES]) is not None:
        raise DuplicateAccount(account_id)
    aliases = list(aliases)
    _claim_aliases(tx, account_id, aliases)
    acct = Account(account_id, currency, balance, credit_limit, 0, plan, status, aliases,
                   tx.now, tx.now)
    _journal(tx, acct, "create", key, delta=balance, reason="create")
    _save(tx, acct)
    _remember(tx, key, "create_account", acct, what)
    return acct


def set_status(tx: Tx, key: Key, account_id: str, status: str) -> Account:
    """active <-> suspended; closed is final and needs no open reservation."""
    if (hit := _replayed(tx, key, "set_status", Account)) is not None:
        return hit
    if status not in STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    acct = _open(tx.get_account(account_id))
    if status == "closed" and (acct.reserved or tx.reservations(account_id)):
        raise AccountBusy(f"account {account_id!r} has open reservations")
    if acct.status != status:
        acct.status = status
        _journal(tx, acct, "status", key, reason=status)
        _save(tx, acct)
    _remember(tx, key, "set_status", acct)
    return acct


def update_account(tx: Tx, key: Key, account_id: str, **changes: object) -> Account:
    """Change plan, credit_limit, aliases (replaced), status, or currency (only while empty)."""
    if (hit := _replayed(tx, key, "update_account", Account)) is not None:
        return hit
    unknown = set(changes) - {"plan", "credit_limit", "aliases", "status", "currency"}
    if unknown:
        raise InvalidArgument(f"cannot update {', '.join(sorted(unknown))}")
    acct = _open(tx.get_account(account_id))
    if "status" in changes and changes["status"] != acct.status:
        status = changes["status"]
        if status not in STATUSES:
            raise InvalidArgument(f"bad status {status!r}")
        if status == "closed" and (acct.reserved or tx.reservations(account_id)):
            raise AccountBusy(f"account {account_id!r} has open reservations")
        acct.status = status
    if "plan" in changes:
        if not isinstance(changes["plan"], str) or not changes["plan"]:
            raise InvalidArgument(f"bad plan {changes['plan']!r}")
        acct.plan = changes["plan"]
    if "credit_limit" in changes:
        acct.credit_limit = _units(changes["credit_limit"], "credit limit")
    if "currency" in changes and changes["currency"] != acct.currency:
        cur = _currency(changes["currency"])
        if acct.balance or acct.reserved or acct.nbundles:
            raise CurrencyMismatch(account_id, acct.currency, cur)
        acct.currency = cur
    if "aliases" in changes:
        aliases = changes["aliases"]
        if not isinstance(aliases, Iterable):
            raise InvalidArgument(f"aliases must be a list of ids, not {aliases!r}")
        new = list(aliases)
        t = tx.write_txn
        for alias in acct.aliases:
            t.delete(alias.encode(), db=tx.dbs[ALIASES])
        _claim_aliases(tx, account_id, new)
        acct.aliases = new
    _journal(tx, acct, "update", key, reason=",".join(sorted(changes)))
    _save(tx, acct)
    _remember(tx, key, "update_account", acct)
    return acct


def _credit(tx: Tx, key: Key, op: str, account_id: str, amount: int, reason: str,
            currency: str | None, *, positive: bool) -> int:
    what = [account_id, amount]  # currency is only a guard: a retry may add or drop it
    if (hit := _replayed(tx, key, op, int, what)) is not None:
        return hit
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0 or (positive and amount < 0):
        raise InvalidArgument(f"{op} amount must be a {'positive' if positive else 'non-zero'} integer")
    acct = _open(tx.get_account(account_id))
    if currency is not None and currency != acct.currency:
        raise CurrencyMismatch(account_id, acct.currency, currency)
    acct.balance += amount
    _journal(tx, acct, op, key, delta=amount, reason=reason)
    _save(tx, acct)
    _remember(tx, key, op, acct.balance, what)
    return acct.balance


def topup(tx: Tx, key: Key, account_id: str, amount: int, reason: str = "topup",
          currency: str | None = None) -> int:
    """Credit money; returns the new balance."""
    return _credit(tx, key, "topup", account_id, amount, reason, currency, positive=True)


def adjust(tx: Tx, key: Key, account_id: str, amount: int, reason: str,
           currency: str | None = None) -> int:
    """Operator correction (either sign, may go below the credit limit); returns the new balance."""
    return _credit(tx, key, "adjust", account_id, amount, reason, currency, positive=False)


def refund(tx: Tx, key: Key, *, account_id: str, amount: int, session_id: str | None = None,
           rating_group: int | None = None, reason: str = "refund") -> int:
    """CCR-EVENT REFUND_ACCOUNT: credit money back; returns the new balance."""
    if (hit := _replayed(tx, key, "refund", int)) is not None:
        return hit
    _units(amount, "refund amount", positive=True)
    acct = _open(tx.get_account(account_id))
    acct.balance += amount
    _journal(tx, acct, "refund", key, delta=amount, session_id=session_id,
             rating_group=rating_group, reason=reason)
    _save(tx, acct)
    _remember(tx, key, "refund", acct.balance)
    return acct.balance


# -- bundles ----------------------------------------------------------------------------------

def add_bundle(tx: Tx, key: Key, account_id: str, *, unit: str, amount: int,
               rating_groups: tuple[int, ...] | list[int] = (), valid_from: int | None = None,
               expires: int | None = None, priority: int = 0) -> str:
    """Grant an allowance; returns its bundle id (unique within the account)."""
    what = [account_id, unit, amount, list(rating_groups), valid_from, expires, priority]
    if (hit := _replayed(tx, key, "add_bundle", str, what)) is not None:
        return hit
    _unit(unit)
    _units(amount, "bundle amount", positive=True)
    rgs = sorted({int(rg) for rg in rating_groups})
    for rg in rgs:
        if not 0 <= rg < 0xFFFFFFFF:
            raise InvalidArgument(f"bad rating group {rg}")
    if expires is not None and valid_from is not None and expires <= valid_from:
        raise InvalidArgument("bundle expires before it is valid")
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1 << 31:
        raise InvalidArgument(f"priority must be an integer of at most 2**31, not {priority!r}")
    acct = _open(tx.get_account(account_id))
    acct.bundle_seq += 1
    acct.nbundles += 1
    b = Bundle(account_id, str(acct.bundle_seq), unit, amount, 0, rgs, valid_from, expires,
               priority, tx.now, amount)
    t = tx.write_txn
    t.put(b.key(), b.pack(), db=tx.dbs[BUNDLES])
    if expires is not None:
        t.put(be8(expires) + b.key(), b"", db=tx.dbs[BUNDLE_EXPIRY])
    _journal(tx, acct, "bundle", key, bundles=[[b.id, amount, 0]], reason=unit)
    _save(tx, acct)
    _remember(tx, key, "add_bundle", b.id, what)
    return b.id


def _due(tx: Tx, dbname: str, now: int, limit: int) -> list[bytes]:
    """Keys of an expiry index (8-byte BE instant + record key) due at `now`, oldest first."""
    cur = tx.read_txn.cursor(db=tx.dbs[dbname])
    found: list[bytes] = []
    if cur.first():
        for ikey in cur.iternext(keys=True, values=False):
            if len(found) >= limit or int.from_bytes(ikey[:8], "big") > now:
                break
            found.append(ikey)
    return found


def _due_records(tx: Tx, index: str, dbname: str, now: int, limit: int) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(index key, record key, record) of each record due in `index`; an index key whose record is
    gone is dropped on the way."""
    for ikey in _due(tx, index, now, limit):
        key = ikey[8:]
        raw = tx.read_txn.get(key, db=tx.dbs[dbname])
        if raw is None:
            tx.write_txn.delete(ikey, db=tx.dbs[index])
            continue
        yield ikey, key, raw


def expire_bundles(tx: Tx, now: int | None = None, limit: int = 1000) -> list[tuple[str, str, int]]:
    """Forfeit what is left of bundles expired at `now`; a bundle still held by a reservation keeps
    the held part (its commit may use it) and is removed by a later call once free.
    Returns (account_id, bundle_id, forfeited) for each bundle touched."""
    now = tx.now if now is None else now
    out = []
    for ikey, bkey, raw in _due_records(tx, BUNDLE_EXPIRY, BUNDLES, now, limit):
        b = Bundle.unpack(bkey, raw)
        acct = tx.get_account(b.account_id)
        forfeit = max(0, b.available)
        if forfeit == 0 and b.reserved:
            continue
        b.remaining -= forfeit
        t = tx.write_txn
        if b.reserved == 0:
            t.delete(bkey, db=tx.dbs[BUNDLES])
            t.delete(ikey, db=tx.dbs[BUNDLE_EXPIRY])
            acct.nbundles -= 1
        else:
            t.put(bkey, b.pack(), db=tx.dbs[BUNDLES])
        _journal(tx, acct, "expiry", None, bundles=[[b.id, -forfeit, 0]], reason="bundle expired")
        _save(tx, acct)
        out.append((b.account_id, b.id, forfeit))
    return out


# -- two-phase charging -----------------------------------------------------------------------

def reserve(tx: Tx, key: Key, *, account_id: str, session_id: str, rating_group: int | None,
            unit: str, units: int, price: Pricing | Price, afford: Price | None = None,
            all_or_nothing: bool, expires_at: int, rate_ref: object = None) -> ReserveResult:
    """Hold `units`: applicable bundles of `unit` first (priority, then soonest expiry), the rest
    priced with price.cost(0, n) and held on money bundles, then on balance + credit_limit -
    reserved. Short of money: all_or_nothing -> InsufficientFunds; else n = price.afford(0,
    available money) units. `price` is a Pricing, or plain functions price(n) and afford(budget).
    Granting nothing leaves no reservation (units_granted=0, limited=True)."""
    if (hit := _replayed(tx, key, "reserve", ReserveResult)) is not None:
        return hit
    _unit(unit)
    _units(units)
    rkey = reservation_key(session_id, rating_group)
    acct = _active(tx.get_account(account_id))
    reserved_before = acct.reserved
    w = _Work(tx, acct)
    old = _find_reservation(tx, account_id, rkey)
    if old is not None:
        w.unhold(old)
        acct.reserved -= old.money_held
    result = _hold(tx, w, acct, old, rkey, session_id=session_id, rating_group=rating_group, unit=unit,
                   units=units, pricing=pricing_of(price, afford), settled=0,
                   all_or_nothing=all_or_nothing, expires_at=expires_at, rate_ref=rate_ref)
    bundles = w.flush()
    if result.units_granted or old is not None:
        _journal(tx, acct, "reserve", key, reserved_delta=acct.reserved - reserved_before,
                 bundles=bundles, session_id=session_id, rating_group=rating_group)
        _save(tx, acct)
    _remember(tx, key, "reserve", result)
    return result


def covers(tx: Tx, *, account_id: str, rating_group: int | None, unit: str, units: int,
           price: Pricing | Price) -> bool:
    """Whether reserve(..., all_or_nothing=True) of `units` would succeed now, for a session that
    holds nothing yet (CHECK_BALANCE). Bundles count as _hold counts them. Writes nothing."""
    _unit(unit)
    _units(units)
    acct = _active(tx.get_account(account_id))
    w = _Work(tx, acct)
    n = max(0, units - sum(max(0, b.available) for b in w.applicable(unit, rating_group)))
    return not n or pricing_of(price).cost(0, n) <= _money_on_hand(w, acct, unit, rating_group)[1]


def _nothing_left(w: _Work, acct: Account, unit: str, rating_group: int | None, pricing: Pricing,
                  settled: int, n: int) -> bool:
    """After a hold of `n` priced units: could another grant be made? No bundle unit of `unit`
    left and less money than the next unit costs (cost(n + 1) - cost(n): 0 inside an increment
    already paid or on a free rate) means this grant was the last: Final-Unit-Indication."""
    if any(b.available > 0 for b in w.applicable(unit, rating_group)):
        return False
    step = pricing.cost(settled, n + 1) - pricing.cost(settled, n)
    return step > _money_on_hand(w, acct, unit, rating_group)[1]


def _money_on_hand(w: _Work, acct: Account, unit: str,
                   rating_group: int | None) -> tuple[list[Bundle], int]:
    """The money bundles that may pay for `unit` (none when the unit is money itself) and the
    money available: theirs plus the account's balance + credit limit - reserved."""
    mbs = w.applicable("money", rating_group) if unit != "money" else []
    return mbs, sum(max(0, b.available) for b in mbs) + max(0, acct.available)


def _hold(tx: Tx, w: _Work, acct: Account, old: Reservation | None, rkey: bytes, *, session_id: str,
          rating_group: int | None, unit: str, units: int, pricing: Pricing, settled: int,
          all_or_nothing: bool, expires_at: int, rate_ref: object) -> ReserveResult:
    """The holding half of reserve: in memory, then the reservation record (replacing `old`,
    whose holds the caller has already given back). The grant is priced after the `settled`
    money units the same op has just paid for (commit_and_reserve's usage; 0 for reserve)."""
    holds: list[list[Any]] = []
    bundle_units = 0
    if w.bundles:
        for b in w.applicable(unit, rating_group):
            take = min(b.available, units - bundle_units)
            if take > 0:
                w.change(b, reserved=take)
                holds.append([b.id, take])
                bundle_units += take
                if bundle_units == units:
                    break
    n = units - bundle_units
    cost = 0
    limited = False
    held_on_balance = 0
    if n:
        mbs, avail = _money_on_hand(w, acct, unit, rating_group)
        cost = pricing.cost(settled, n)
        if cost > avail:
            if all_or_nothing:
                raise InsufficientFunds(acct.id, cost, avail)
            n = min(max(0, int(pricing.afford(settled, avail))), n)
            cost = pricing.cost(settled, n) if n else 0
            if cost > avail:
                raise InvalidArgument(f"afford({avail}) = {n} units cost {cost}, more than available")
            limited = True
        left = cost
        for b in mbs:
            take = min(max(0, b.available), left)
            if take:
                w.change(b, reserved=take)
                holds.append([b.id, take])
                left -= take
        acct.reserved += left
        held_on_balance = left
    granted = bundle_units + n
    if granted and not limited and not all_or_nothing:
        limited = _nothing_left(w, acct, unit, rating_group, pricing, settled, n)
    if granted:
        res = Reservation(session_id, rating_group, acct.id, unit, granted, holds,
                          held_on_balance, expires_at, rate_ref, tx.now, rkey=rkey)
        _put_reservation(tx, res, old)
    elif old is not None:
        _drop_reservation(tx, old)
    return ReserveResult(granted, bundle_units, cost, limited or granted < units, expires_at)


def commit_and_reserve(tx: Tx, key: Key, *, account_id: str, session_id: str,
                       rating_group: int | None, used_units: int, used_price: Pricing | Price,
                       unit: str, units: int, price: Pricing | Price, afford: Price | None = None,
                       all_or_nothing: bool, expires_at: int, rate_ref: object = None,
                       reason: str = "usage") -> tuple[CommitResult, ReserveResult]:
    """A usage report with a new quota request (CCR-UPDATE): commit() then reserve() in one pass
    over the account, with the reservation rewritten in place and one "update" ledger entry
    carrying both the debit and the change of what is held. The usage is priced with
    used_price.cost(0, m) for its m money units; the new grant with price.cost(m, n) and
    price.afford(m, budget), so it is rated after the usage whatever order things are asked in."""
    if (hit := _replayed(tx, key, "update", tuple)) is not None:
        return hit
    _unit(unit)
    _units(units)
    _units(used_units, "used units")
    rkey = reservation_key(session_id, rating_group)
    acct = _active(tx.get_account(account_id))
    balance_before, reserved_before = acct.balance, acct.reserved
    w = _Work(tx, acct)
    old = _find_reservation(tx, account_id, rkey)
    if old is not None and old.unit != unit:
        raise InvalidArgument(f"reservation is in {old.unit}, not {unit}")
    bundle_used, m, debited, shortfall = _settle(w, acct, old, unit, rating_group, used_units,
                                                 pricing_of(used_price))
    if old is not None:
        w.unhold(old)
        acct.reserved -= old.money_held
    held = _hold(tx, w, acct, old, rkey, session_id=session_id, rating_group=rating_group, unit=unit,
                 units=units, pricing=pricing_of(price, afford), settled=m,
                 all_or_nothing=all_or_nothing, expires_at=expires_at, rate_ref=rate_ref)
    bundles = w.flush()
    _journal(tx, acct, "update", key, delta=acct.balance - balance_before,
             reserved_delta=acct.reserved - reserved_before, bundles=bundles,
             session_id=session_id, rating_group=rating_group, reason=reason)
    _save(tx, acct)
    result = (CommitResult(bundle_used, m, debited, shortfall, acct.balance,
                          balance_before - acct.balance), held)
    _remember(tx, key, "update", result)
    return result


def _settle(w: _Work, acct: Account, res: Reservation | None, unit: str,
            rating_group: int | None, used: int, pricing: Pricing) -> tuple[int, int, int, int]:
    """Draw `used` units: held bundle units, other applicable bundles, then price the rest and take
    it from held money (money bundles, balance), then from what is available. In memory only."""
    bundle_used = 0
    if res is not None:
        for h in res.holds:
            if bundle_used == used:
                break
            b = w.bundles.get(h[0])
            if b is None or b.unit != unit or not h[1]:
                continue
            take = min(h[1], used - bundle_used)
            w.change(b, remaining=-take, reserved=-take)
            h[1] -= take
            bundle_used += take
    if bundle_used < used and w.bundles:
        for b in w.applicable(unit, rating_group):
            take = min(max(0, b.available), used - bundle_used)
            if take:
                w.change(b, remaining=-take)
                bundle_used += take
    m = used - bundle_used
    cost = pricing.cost(0, m) if m else 0
    debited = 0
    if cost and res is not None:
        if unit != "money":
            for h in res.holds:
                b = w.bundles.get(h[0])
                if b is not None and b.unit == "money" and h[1] and debited < cost:
                    take = min(h[1], cost - debited)
                    w.change(b, remaining=-take, reserved=-take)
                    h[1] -= take
                    debited += take
        take = min(res.money_held, cost - debited)
        acct.balance -= take
        acct.reserved -= take
        res.money_held -= take
        debited += take
    if debited < cost and unit != "money" and w.bundles:
        for b in w.applicable("money", rating_group):
            take = min(max(0, b.available), cost - debited)
            if take:
                w.change(b, remaining=-take)
                debited += take
    if debited < cost:
        take = min(max(0, acct.available), cost - debited)
        acct.balance -= take
        debited += take
    return bundle_used, m, debited, cost - debited


def commit(tx: Tx, key: Key, *, account_id: str, session_id: str, rating_group: int | None,
           used_units: int, price: Pricing | Price, release_rest: bool = True, reason: str = "usage",
           unit: str | None = None) -> CommitResult:
    """Debit used units against the (session, rating group) reservation; release the rest unless
    release_rest=False. Above what is held, debit up to what is available and report the shortfall.
    No reservation: a direct debit of `unit` (default: the reservation's, else money)."""
    if (hit := _replayed(tx, key, "commit", CommitResult)) is not None:
        return hit
    _units(used_units, "used units")
    rkey = reservation_key(session_id, rating_group)
    acct = tx.get_account(account_id)
    res = _find_reservation(tx, account_id, rkey)
    unit = _unit(res.unit if res is not None else (unit or "money"))
    balance_before, reserved_before = acct.balance, acct.reserved
    w = _Work(tx, acct)
    bundle_used, m, debited, shortfall = _settle(w, acct, res, unit, rating_group, used_units,
                                                 pricing_of(price))
    if res is not None:
        if release_rest or not (res.money_held or any(h[1] for h in res.holds)):
            w.unhold(res)
            acct.reserved -= res.money_held
            _drop_reservation(tx, res)
        else:
            res.holds = [h for h in res.holds if h[1]]
            res.units_granted = max(0, res.units_granted - used_units)
            tx.write_txn.put(rkey, res.pack(), db=tx.dbs[RESERVATIONS])
    bundles = w.flush()
    if res is not None or used_units:
        _journal(tx, acct, "commit", key, delta=acct.balance - balance_before,
                 reserved_delta=acct.reserved - reserved_before, bundles=bundles,
                 session_id=session_id, rating_group=rating_group, reason=reason)
        _save(tx, acct)
    result = CommitResult(bundle_used, m, debited, shortfall, acct.balance,
                          balance_before - acct.balance)
    _remember(tx, key, "commit", result)
    return result


def direct_debit(tx: Tx, key: Key, *, account_id: str, units: int,
                 price: Pricing | Price | None = None,
                 unit: str = "money", rating_group: int | None = None,
                 session_id: str | None = None, all_or_nothing: bool = True,
                 reason: str = "debit") -> CommitResult:
    """CCR-EVENT DIRECT_DEBITING: bundles of `unit` first, the rest priced (money: price = units).
    all_or_nothing: InsufficientFunds unless all of it can be collected."""
    if (hit := _replayed(tx, key, "direct_debit", CommitResult)) is not None:
        return hit
    _unit(unit)
    _units(units)
    acct = _active(tx.get_account(account_id))
    balance_before = acct.balance
    w = _Work(tx, acct)
    bundle_used, m, debited, shortfall = _settle(w, acct, None, unit, rating_group, units,
                                                 MONEY if price is None else pricing_of(price))
    if shortfall and all_or_nothing:
        raise InsufficientFunds(account_id, debited + shortfall, debited)
    bundles = w.flush()
    _journal(tx, acct, "debit", key, delta=acct.balance - balance_before, bundles=bundles,
             session_id=session_id, rating_group=rating_group, reason=reason)
    _save(tx, acct)
    result = CommitResult(bundle_used, m, debited, shortfall, acct.balance,
                          balance_before - acct.balance)
    _remember(tx, key, "direct_debit", result)
    return result


def _release(tx: Tx, acct: Account, res: Reservation, kind: str, key: Key,
             reason: str) -> ReleaseResult:
    w = _Work(tx, acct)
    units, money = w.unhold(res)
    money += res.money_held
    acct.reserved -= res.money_held
    _drop_reservation(tx, res)
    bundles = w.flush()
    _journal(tx, acct, kind, key, reserved_delta=-res.money_held, bundles=bundles,
             session_id=res.session_id, rating_group=res.rating_group, reason=reason)
    _save(tx, acct)
    return ReleaseResult(units, money)


def release(tx: Tx, key: Key, *, account_id: str, session_id: str, rating_group: int | None,
            reason: str = "release") -> ReleaseResult:
    """Give back everything a reservation holds; no reservation -> nothing released."""
    if (hit := _replayed(tx, key, "release", ReleaseResult)) is not None:
        return hit
    acct = tx.get_account(account_id)
    res = _find_reservation(tx, account_id, reservation_key(session_id, rating_group))
    result = ReleaseResult(0, 0) if res is None else _release(tx, acct, res, "release", key, reason)
    _remember(tx, key, "release", result)
    return result


def expire_reservations(tx: Tx, now: int | None = None,
                        limit: int = 1000) -> list[tuple[str, int | None, str]]:
    """Release reservations whose expiry instant is <= now (deterministic timeouts), at most
    `limit` per call. Returns (session_id, rating_group, account_id) of each."""
    now = tx.now if now is None else now
    out = []
    for ikey, rkey, raw in _due_records(tx, RESV_EXPIRY, RESERVATIONS, now, limit):
        res = Reservation.unpack(rkey, raw)
        if res.expires_at > now:  # filed early (see _put_reservation): file it at its real instant
            t = tx.write_txn
            t.delete(ikey, db=tx.dbs[RESV_EXPIRY])
            res.filed_at = res.expires_at
            t.put(be8(res.filed_at) + rkey, b"", db=tx.dbs[RESV_EXPIRY])
            t.put(rkey, res.pack(), db=tx.dbs[RESERVATIONS])
            continue
        _release(tx, tx.get_account(res.account_id), res, "expiry", None, "reservation expired")
        out.append((res.session_id, res.rating_group, res.account_id))
    return out
