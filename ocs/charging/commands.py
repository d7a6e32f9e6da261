"""Provisioning commands and consistent reads, by name: what the CLI (and the API to come) asks.

One function per command over a balance Tx, returning plain data (msgpack-able dicts, lists,
ints and strings, never a record object): the same function runs in the CLI's own write txn when
no server runs, and in the engine's batch, sent over the control socket, while one does. The engine
is then the only writer (the charging engine v2 keeps its state in memory; a write behind its back
would be overwritten by its next checkpoint), and a command that has returned is in force for the
next request because the engine applies it in its batch order.

Checks that read the store (the plans and currency of the tariffs in force, that an id is known)
run inside the command, in the same transaction as its write: nothing can change between them.
A command refuses by raising `Refused` (or a balance error) before it writes: the caller prints
the message on one line and exits 2, and nothing changed.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from balance import ops
from balance.errors import (
    AccountBusy,
    AccountNotActive,
    BalanceError,
    DuplicateAccount,
    IdempotencyConflict,
    InsufficientFunds,
    StoreFullError,
    UnknownAccount,
)
from balance.schema import (
    ACCOUNTS,
    API_KEYS,
    META,
    META_TARIFF_ANNOUNCED,
    TARIFFS,
    pack_i64,
    unpack_i64,
)
from balance.store import Tx
from ocs.charging import access, alerts, audit, outbox
from ocs.charging import queries as queries  # registers the session and CDR commands
from ocs.charging.registry import ADMIN, FORBIDDEN, READERS, UNAUTHORIZED, Spec
from ocs.charging.registry import COMMANDS as COMMANDS  # re-exported: what callers run by name
from ocs.charging.registry import CONFLICT as CONFLICT
from ocs.charging.registry import INVALID as INVALID
from ocs.charging.registry import NOT_FOUND as NOT_FOUND
from ocs.charging.registry import Refused as Refused
from ocs.charging.registry import command as _command
from ocs.charging.registry import reads as reads
from ocs.charging.registry import resolve as _resolve

NO_TARIFF = "no tariff loaded; load one first with `ocs tariff load`"
LIST_PAGE = 10_000  # accounts per `account.list` call: a million accounts is a hundred calls
_KINDS: dict[type[BalanceError], str] = {UnknownAccount: NOT_FOUND, DuplicateAccount: CONFLICT,
                                         IdempotencyConflict: CONFLICT, AccountBusy: CONFLICT,
                                         AccountNotActive: CONFLICT, InsufficientFunds: CONFLICT}



def run(tx: Tx, name: str, args: dict[str, Any], actor: dict[str, Any] | None = None) -> Any:
    """Run command `name` with keyword `args` in `tx` for `actor` ({"cli": USER} from the command
    line, {"key": SHA-256 of an API key, "request_id": ID} from the API; None: in-process callers).
    Refused for an unknown command, an actor not allowed, or a command that refuses (balance
    errors become Refused, except a full store, which is the server's failure). A change is
    audited in the same transaction."""
    spec = COMMANDS.get(name)
    if spec is None:
        raise Refused(f"unknown command {name!r}", NOT_FOUND)
    who = _authorize(tx, spec, args, actor or {})
    try:
        result = spec.fn(tx, **args)
    except TypeError as exc:  # arguments that do not match: a client of another version
        if not getattr(tx, "dirty", False):  # a read view never writes
            raise Refused(f"bad arguments for {name}: {exc}") from None
        raise
    except StoreFullError:
        raise
    except BalanceError as exc:
        raise Refused(str(exc), _KINDS.get(type(exc), INVALID)) from None
    if spec.writes and spec.audited:
        account = args.get("ident", args.get("account"))
        if name.startswith("account.") and isinstance(result, dict):
            account = result.get("id", account)  # resolved: an alias names its account
        audit.append(tx.write_txn, tx.dbs, {
            "at": tx.now, "actor": who, "command": name,
            "account": account if isinstance(account, str) else None,
            "idempotency_key": args.get("key"), "request_id": (actor or {}).get("request_id"),
            "outcome": _summary(result)})
    return result


def _authorize(tx: Tx, spec: Spec, args: dict[str, Any], actor: dict[str, Any]) -> str:
    if "key" not in actor:
        return f"cli:{actor.get('cli') or '?'}"
    key = access.find(tx.read_txn, tx.dbs, actor["key"])
    if key is None:
        raise Refused("unknown or revoked API key", UNAUTHORIZED)
    if key.role == "selfcare" and spec.selfcare:
        ident = args.get("ident")
        if not isinstance(ident, str) or tx.resolve(ident) != key.account:
            raise Refused("a selfcare key sees its own account only", FORBIDDEN)
    elif key.role not in spec.roles:
        raise Refused(f"role {key.role} may not do this", FORBIDDEN)
    return f"key:{key.name}"


def _summary(result: object) -> object:
    """What an audit entry keeps of a result: scalars, and the scalar fields of a dict."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if isinstance(v, (int, str, bool, type(None)))}
    return result if isinstance(result, (int, str, bool, type(None))) else None


def as_data(record: object) -> dict[str, Any]:
    """A balance record (Account, Bundle, LedgerEntry) as a plain dict of its fields."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"not a record: {record!r}")
    return dataclasses.asdict(record)


# -- accounts -----------------------------------------------------------------------------------

def _plans_and_currency(tx: Tx) -> tuple[set[str], str | None]:
    """The plans of every loaded tariff version not retired, and the currency of the one in
    force now; Refused without any tariff."""
    from rating.tariff_store import records_in, version_in_force
    recs = records_in(tx.read_txn, tx.dbs[TARIFFS])
    plans = {p for rec in recs if not rec.get("retired_at") for p in rec["plans"]}
    if not plans:
        raise Refused(NO_TARIFF)
    current = version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)
    currency = next((r["currency"] for r in recs if r["version"] == current), None)
    return plans, currency


def _check_row(plans: set[str], tariff_currency: str | None, plan: str, currency: str,
               where: str) -> None:
    if plan not in plans:  # an account on a plan no tariff prices would get 5031 on every request
        raise Refused(f"{where}no loaded tariff has plan {plan!r} (plans: {', '.join(sorted(plans))})")
    if tariff_currency is not None and tariff_currency != currency:
        # the server would read EUR micro-prices as JPY ones (it refuses to rate such an account)
        raise Refused(f"{where}currency {currency} is not the tariff's ({tariff_currency})")


@_command("account.create")
def account_create(tx: Tx, *, key: str, account_id: str, currency: str, balance: int,
                   credit_limit: int = 0, plan: str = "default",
                   aliases: list[str] | None = None) -> dict[str, Any]:
    plans, tariff_currency = _plans_and_currency(tx)
    _check_row(plans, tariff_currency, plan, currency, f"{account_id}: ")
    acct = ops.create_account(tx, key, account_id=account_id, currency=currency, balance=balance,
                              credit_limit=credit_limit, plan=plan, aliases=aliases or ())
    return as_data(acct)


@_command("account.import", frozenset())  # the command line only
def account_import(tx: Tx, *, rows: list[dict[str, Any]], dry_run: bool) -> int:
    """Create the accounts of `rows` (each: key, where, and create_account's fields). A dry run
    creates them in a nested txn and throws it away: every row through the real op, its real key,
    so rows an interrupted run of the same file created replay and any other existing id refuses."""
    plans, tariff_currency = _plans_and_currency(tx)
    for row in rows:
        _check_row(plans, tariff_currency, row["plan"], row["currency"], f"{row['where']}: ")

    def create_all(t: Tx) -> None:
        for row in rows:
            fields = {k: v for k, v in row.items() if k not in ("key", "where")}
            try:
                ops.create_account(t, row["key"], **fields)
            except StoreFullError:
                raise
            except BalanceError as exc:
                raise Refused(f"{row['where']}: {exc}") from None

    if not dry_run:
        create_all(tx)
        return len(rows)
    try:
        with tx.nested() as sub:
            create_all(sub)
            raise _DryRunDone
    except _DryRunDone:
        pass
    return len(rows)


class _DryRunDone(Exception):
    """Ends a dry run's nested txn, which aborts it."""


@_command("account.topup")
def account_topup(tx: Tx, *, key: str, ident: str, amount: int, reason: str = "topup",
                  currency: str | None = None) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    seq = tx.get_account(account_id).seq
    balance = ops.topup(tx, key, account_id, amount, reason=reason, currency=currency)
    _credited(tx, account_id, seq, "topup.applied", amount, reason)
    return {"id": account_id, "balance": balance}


def _credited(tx: Tx, account_id: str, seq_before: int, kind: str | None, amount: int,
              reason: str) -> None:
    """The events of a credit or debit that applied (not of a retry answered from its key)."""
    acct = tx.get_account(account_id)
    if acct.seq == seq_before:
        return
    if kind is not None:
        outbox.emit(tx.write_txn, tx.dbs, kind, at=tx.now, account=account_id,
                    data={"amount": amount, "balance": acct.balance, "currency": acct.currency,
                          "reason": reason})
    if amount > 0:
        alerts.after_credit(tx.write_txn, tx.dbs, acct)
    else:
        alerts.after_debit(tx.write_txn, tx.dbs, acct, tx.now)


@_command("account.adjust")
def account_adjust(tx: Tx, *, key: str, ident: str, amount: int, reason: str,
                   currency: str | None = None) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    seq = tx.get_account(account_id).seq
    balance = ops.adjust(tx, key, account_id, amount, reason, currency=currency)
    _credited(tx, account_id, seq, None, amount, reason)
    return {"id": account_id, "balance": balance}


@_command("account.bundle")
def account_bundle(tx: Tx, *, key: str, ident: str, unit: str, amount: int,
                   rating_groups: list[int] | None = None, valid_from: int | None = None,
                   expires: int | None = None, priority: int = 0) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    bid = ops.add_bundle(tx, key, account_id, unit=unit, amount=amount,
                         rating_groups=rating_groups or (), valid_from=valid_from, expires=expires,
                         priority=priority)
    return {"id": account_id, "bundle": bid}


@_command("account.status")
def account_status(tx: Tx, *, key: str, ident: str, status: str) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    was = tx.get_account(account_id).status
    acct = ops.set_status(tx, key, account_id, status)
    _status_event(tx, acct.id, was, acct.status)
    return as_data(acct)


_STATUS_EVENTS = {"active": "account.activated", "suspended": "account.suspended",
                  "closed": "account.closed"}


def _status_event(tx: Tx, account_id: str, was: str, now_is: str) -> None:
    if was != now_is and now_is in _STATUS_EVENTS:
        outbox.emit(tx.write_txn, tx.dbs, _STATUS_EVENTS[now_is], at=tx.now, account=account_id,
                    data={"status": now_is, "was": was})


@_command("account.show", READERS, writes=False, selfcare=True)
def account_show(tx: Tx, *, ident: str) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    return {"account": as_data(tx.get_account(account_id)),
            "bundles": [as_data(b) for b in tx.bundles(account_id)]}


@_command("account.list", READERS, writes=False)
def account_list(tx: Tx, *, after: str = "", limit: int = LIST_PAGE, status: str | None = None,
                 plan: str | None = None, prefix: str = "",
                 alias: str | None = None) -> list[dict[str, Any]]:
    """Accounts in id order, the first `limit` after id `after` that match the filters (a page:
    call again from the last id). `alias` (an IMSI, ...) selects the one account it names."""
    from balance.records import Account
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= LIST_PAGE:
        raise Refused(f"limit must be 1..{LIST_PAGE}")
    if alias is not None:
        target = tx.read_txn.get(alias.encode(), db=tx.dbs["aliases"])
        if target is None or target.decode() <= after:
            return []
        acct = tx.get_account(target.decode())
        match = (status in (None, acct.status) and plan in (None, acct.plan)
                 and acct.id.startswith(prefix))
        return [as_data(acct)] if match else []
    cur = tx.read_txn.cursor(db=tx.dbs[ACCOUNTS])
    start = max(after, prefix).encode()
    if not cur.set_range(start):
        return []
    out: list[dict[str, Any]] = []
    pre = prefix.encode()
    for key, raw in cur:
        if not key.startswith(pre):
            break
        if key == after.encode():
            continue
        acct = Account.unpack(key.decode(), raw)
        if status not in (None, acct.status) or plan not in (None, acct.plan):
            continue
        out.append(as_data(acct))
        if len(out) >= limit:
            break
    return out


@_command("account.update")
def account_update(tx: Tx, *, key: str, ident: str, plan: str | None = None,
                   credit_limit: int | None = None, status: str | None = None) -> dict[str, Any]:
    """Change an account's plan (a plan of a loaded tariff), credit limit or status."""
    account_id = _resolve(tx, ident)
    changes: dict[str, object] = {}
    if plan is not None:
        plans, _currency = _plans_and_currency(tx)
        if plan not in plans:
            raise Refused(f"no loaded tariff has plan {plan!r} (plans: {', '.join(sorted(plans))})")
        changes["plan"] = plan
    if credit_limit is not None:
        changes["credit_limit"] = credit_limit
    if status is not None:
        changes["status"] = status
    if not changes:
        raise Refused("nothing to change: give plan, credit_limit or status")
    was = tx.get_account(account_id).status
    acct = ops.update_account(tx, key, account_id, **changes)
    _status_event(tx, acct.id, was, acct.status)
    return as_data(acct)


@_command("engine.ping", access.ANY_ROLE, writes=False)
def engine_ping(tx: Tx) -> dict[str, Any]:
    """The readiness probe's question: the engine answers and the store can be read."""
    return {"now": tx.now, "accounts": tx.read_txn.stat(tx.dbs[ACCOUNTS])["entries"]}


@_command("account.ledger", READERS, writes=False, selfcare=True)
def account_ledger(tx: Tx, *, ident: str, after_seq: int = 0) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    return {"id": account_id, "entries": [as_data(e) for e in tx.ledger(account_id, after_seq)]}


@_command("account.resolve", READERS, writes=False, selfcare=True)
def account_resolve(tx: Tx, *, ident: str) -> str:
    return _resolve(tx, ident)


# -- tariffs ------------------------------------------------------------------------------------

@_command("tariff.load", ADMIN)
def tariff_load(tx: Tx, *, text: str, source: str, effective_from: int) -> dict[str, Any]:
    """Store a new tariff version (validated here again: a command may come from any client)."""
    from rating.tariff import TariffError
    from rating.tariff_store import load_in, version_in_force
    try:
        version = load_in(tx.write_txn, tx.dbs[TARIFFS], text, source, effective_from, tx.now)
    except TariffError as exc:
        raise Refused(str(exc)) from None
    announce_tariff(tx)
    return {"version": version, "effective_from": effective_from,
            "in_force": version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)}


def announce_tariff(tx: Tx) -> None:
    """tariff.activated for the version in force, once: at its load when it takes effect at once,
    else at the first sweep after its time (ocs.charging.sweeper) or a later tariff command."""
    from rating.tariff_store import version_in_force
    current = version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)
    raw = tx.read_txn.get(META_TARIFF_ANNOUNCED, db=tx.dbs[META])
    if current is None or (raw is not None and unpack_i64(raw) == current):
        return
    tx.write_txn.put(META_TARIFF_ANNOUNCED, pack_i64(current), db=tx.dbs[META])
    outbox.emit(tx.write_txn, tx.dbs, "tariff.activated", at=tx.now, account=None,
                data={"version": current})


@_command("tariff.retire", ADMIN)
def tariff_retire(tx: Tx, *, version: int) -> dict[str, Any]:
    from rating.tariff_store import TariffNotFound, TariffRetireRefused, retire_in, version_in_force
    try:
        at, was = retire_in(tx.write_txn, tx.dbs[TARIFFS], version, tx.now)
    except TariffNotFound as exc:
        raise Refused(str(exc), NOT_FOUND) from None
    except TariffRetireRefused as exc:
        raise Refused(str(exc), CONFLICT) from None
    announce_tariff(tx)
    return {"at": at, "already": was,
            "in_force": version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)}


@_command("tariff.list", READERS, writes=False)
def tariff_list(tx: Tx) -> list[dict[str, Any]]:
    from rating.tariff_store import records_in, version_in_force
    current = version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)
    return [{**rec, "in_force": rec["version"] == current} for rec in records_in(tx.read_txn, tx.dbs[TARIFFS])]


@_command("tariff.get", READERS, writes=False)
def tariff_get(tx: Tx, *, version: int | None = None) -> dict[str, Any]:
    """One version with its TOML text (None: the one in force now)."""
    from rating.tariff_store import TariffNotFound, record_in, version_in_force
    current = version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)
    wanted = current if version is None else version
    if wanted is None:
        raise Refused(NO_TARIFF, NOT_FOUND)
    if not isinstance(wanted, int):
        raise Refused(f"a tariff version is a number, not {wanted!r}")
    try:
        rec = record_in(tx.read_txn, tx.dbs[TARIFFS], wanted)
    except TariffNotFound as exc:
        raise Refused(str(exc), NOT_FOUND) from None
    return {**rec, "in_force": rec["version"] == current}


@_command("tariff.check", READERS, writes=False)
def tariff_check(tx: Tx, *, text: str, source: str,
                 rating_groups: list[list[Any]] | None = None) -> dict[str, Any]:
    """Validate a tariff without storing it; with rating_groups ([plan, rg] pairs), also require
    a rate for each. Refused with the file's line and key when it does not hold."""
    from rating.tariff import TariffError, check_rating_groups, parse_tariff
    try:
        tariff = parse_tariff(text, source)
        if rating_groups:
            check_rating_groups(tariff, [(str(p), int(rg)) for p, rg in rating_groups])
    except TariffError as exc:
        raise Refused(str(exc)) from None
    return {"currency": tariff.currency, "plans": sorted(tariff.plans), "rates": len(tariff.rates)}


# -- API keys and the audit trail ---------------------------------------------------------------

_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@_command("apikey.create", ADMIN)
def apikey_create(tx: Tx, *, name: str, role: str, digest: bytes,
                  account: str | None = None) -> dict[str, Any]:
    """Store a key by the SHA-256 of its secret (made by the caller, which shows it once)."""
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise Refused(f"bad key name {name!r}: 1-64 of A-Z a-z 0-9 . _ -, starting alphanumeric")
    if role not in access.ROLES:
        raise Refused(f"bad role {role!r}: one of {', '.join(access.ROLES)}")
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise Refused("digest must be the 32-byte SHA-256 of the secret")
    if (role == "selfcare") != (account is not None):
        raise Refused("a selfcare key needs --account, and only a selfcare key takes one")
    if account is not None:
        account = _resolve(tx, account)
    if any(k.name == name and k.revoked is None for k in access.all_keys(tx.read_txn, tx.dbs)):
        raise Refused(f"an API key named {name!r} exists; revoke it first", CONFLICT)
    key = access.ApiKey(name, role, account, tx.now, None, digest)
    tx.write_txn.put(digest, key.pack(), db=tx.dbs[API_KEYS])
    return key.public()


@_command("apikey.list", ADMIN, writes=False)
def apikey_list(tx: Tx) -> list[dict[str, Any]]:
    return [k.public() for k in access.all_keys(tx.read_txn, tx.dbs)]


@_command("apikey.revoke", ADMIN)
def apikey_revoke(tx: Tx, *, name: str) -> dict[str, Any]:
    live = [k for k in access.all_keys(tx.read_txn, tx.dbs) if k.name == name and k.revoked is None]
    if not live:
        raise Refused(f"no live API key named {name!r}", NOT_FOUND)
    key = live[0]
    key.revoked = tx.now
    tx.write_txn.put(key.digest, key.pack(), db=tx.dbs[API_KEYS])
    return key.public()


def _page(limit: int) -> int:
    """A list command's page size, held to 1..10,000 (one answer frame stays small)."""
    return max(1, min(int(limit), 10_000))


@_command("audit.list", ADMIN, writes=False)
def audit_list(tx: Tx, *, after: int = 0, since: int | None = None, account: str | None = None,
               limit: int = 1000) -> list[dict[str, Any]]:
    return [{"position": pos, **e} for pos, e in
            audit.entries(tx.read_txn, tx.dbs, after=after, since=since, account=account,
                          limit=_page(limit))]


# -- webhooks and thresholds ---------------------------------------------------------------------

_URL = re.compile(r"https?://[^\s/?#]+(?::\d{1,5})?(?:[/?#]\S*)?", re.IGNORECASE)
WORKER: frozenset[str] = frozenset()  # the webhook worker's commands: the API process (an actor with no key) only


@_command("webhook.create", ADMIN)
def webhook_create(tx: Tx, *, url: str, events: list[str], secret: str) -> dict[str, Any]:
    """Subscribe `url` to `events` (types, or ["*"]); `secret` is made by the caller, which
    shows it once: the receiver checks the HMAC-SHA256 of each POST with it."""
    if not isinstance(url, str) or len(url) > 2000 or not _URL.fullmatch(url):
        raise Refused(f"url: not an http:// or https:// URL: {url!r}"[:300])
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise Refused("events: a non-empty list of event types, or [\"*\"]")
    unknown = sorted(set(events) - set(outbox.EVENT_TYPES) - {"*"})
    if unknown:
        raise Refused(f"events: unknown type {unknown[0]!r} (types: {', '.join(outbox.EVENT_TYPES)})")
    if not isinstance(secret, str) or not 16 <= len(secret) <= 200:
        raise Refused("secret: 16 to 200 characters")
    return outbox.subscribe(tx.write_txn, tx.dbs, url=url, events=events, secret=secret,
                            now=tx.now)


@_command("webhook.list", ADMIN, writes=False)
def webhook_list(tx: Tx) -> list[dict[str, Any]]:
    return [outbox.public(s) for s in outbox.subscriptions(tx.read_txn, tx.dbs)]


@_command("webhook.delete", ADMIN)
def webhook_delete(tx: Tx, *, sub_id: str) -> dict[str, Any]:
    gone = outbox.unsubscribe(tx.write_txn, tx.dbs, sub_id) if isinstance(sub_id, str) else None
    if gone is None:
        raise Refused(f"no webhook subscription {sub_id!r}", NOT_FOUND)
    return outbox.public(gone)


@_command("webhook.deliveries", ADMIN, writes=False)
def webhook_deliveries(tx: Tx, *, subscription: str | None = None, state: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
    return outbox.deliveries(tx.read_txn, tx.dbs, subscription=subscription, state=state,
                             limit=_page(limit))


@_command("webhook.events", ADMIN, writes=False)
def webhook_events(tx: Tx, *, after: int = 0, type: str | None = None,
                   account: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    return list(outbox.events(tx.read_txn, tx.dbs, after=after, kind=type, account=account,
                              limit=_page(limit)))


@_command("outbox.next", WORKER, writes=False)
def outbox_next(tx: Tx) -> dict[str, Any]:
    return {"due": outbox.next_due(tx.read_txn, tx.dbs), "pending": outbox.depth(tx.read_txn, tx.dbs)}


@_command("outbox.claim", WORKER, audited=False)
def outbox_claim(tx: Tx, *, now_ms: int, limit: int, lease_ms: int) -> list[dict[str, Any]]:
    return outbox.claim(tx.write_txn, tx.dbs, now_ms=int(now_ms), limit=max(1, min(int(limit), 1000)),
                        lease_ms=int(lease_ms))


@_command("outbox.report", WORKER, audited=False)
def outbox_report(tx: Tx, *, outcomes: list[dict[str, Any]], base_ms: int) -> list[str | None]:
    """Each outcome: subscription, position, ok, status, error, now_ms."""
    return [outbox.report(tx.write_txn, tx.dbs, subscription=o["subscription"],
                          position=int(o["position"]), ok=bool(o["ok"]), status=int(o["status"]),
                          error=str(o["error"]), now_ms=int(o["now_ms"]), base_ms=int(base_ms))
            for o in outcomes]


@_command("alert.set")
def alert_set(tx: Tx, *, low_balance: int | None, ident: str | None = None,
              plan: str | None = None) -> dict[str, Any]:
    """The low-balance threshold (micro-units; None clears it) of an account or of a plan."""
    if (ident is None) == (plan is None):
        raise Refused("give an account or a plan, not both")
    if low_balance is not None and (isinstance(low_balance, bool) or not isinstance(low_balance, int)):
        raise Refused("low_balance: an amount")
    account = _resolve(tx, ident) if ident is not None else None
    if plan is not None:
        plans, _currency = _plans_and_currency(tx)
        if plan not in plans:
            raise Refused(f"no loaded tariff has plan {plan!r} (plans: {', '.join(sorted(plans))})")
    alerts.set_threshold(tx.write_txn, tx.dbs, account=account, plan=plan, amount=low_balance)
    if account is not None:  # a new threshold starts armed: the next debit below it fires
        alerts.rearm(tx.write_txn, tx.dbs, account)
    return {"account": account, "plan": plan, "low_balance": low_balance}


@_command("alert.list", READERS, writes=False)
def alert_list(tx: Tx) -> list[dict[str, Any]]:
    return alerts.thresholds(tx.read_txn, tx.dbs)


@_command("apikey.role", WORKER, writes=False)
def apikey_role(tx: Tx, *, digest: bytes) -> str | None:
    """The role of a live key (the API's metrics label its requests with it), None if unknown."""
    key = access.find(tx.read_txn, tx.dbs, digest) if isinstance(digest, bytes) else None
    return None if key is None else key.role

