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
from collections.abc import Callable
from typing import Any

from balance import ops
from balance.errors import BalanceError, StoreFullError
from balance.schema import ACCOUNTS, TARIFFS
from balance.store import Tx

Command = Callable[..., Any]


class Refused(Exception):
    """The command changed nothing; its message names what is wrong, in one line."""


COMMANDS: dict[str, Command] = {}
READS = frozenset({"account.show", "account.list", "account.ledger", "account.resolve"})  # no writes
NO_TARIFF = "no tariff loaded; load one first with `ocs tariff load`"
LIST_PAGE = 10_000  # accounts per `account.list` call: a million accounts is a hundred calls


def _command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return register


def run(tx: Tx, name: str, args: dict[str, Any]) -> Any:
    """Run command `name` with keyword `args` in `tx`; Refused for an unknown command or one that
    refuses (balance errors become Refused, except a full store, which is the server's failure)."""
    fn = COMMANDS.get(name)
    if fn is None:
        raise Refused(f"unknown command {name!r}")
    try:
        return fn(tx, **args)
    except TypeError as exc:  # arguments that do not match: a client of another version
        if not getattr(tx, "dirty", False):  # a read view never writes
            raise Refused(f"bad arguments for {name}: {exc}") from None
        raise
    except StoreFullError:
        raise
    except BalanceError as exc:
        raise Refused(str(exc)) from None


def as_data(record: object) -> dict[str, Any]:
    """A balance record (Account, Bundle, LedgerEntry) as a plain dict of its fields."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"not a record: {record!r}")
    return dataclasses.asdict(record)


# -- accounts -----------------------------------------------------------------------------------

def _resolve(tx: Tx, ident: str) -> str:
    account_id = tx.resolve(ident)
    if account_id is None:
        raise Refused(f"unknown account {ident!r}")
    return account_id


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


@_command("account.import")
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
    return {"id": account_id,
            "balance": ops.topup(tx, key, account_id, amount, reason=reason, currency=currency)}


@_command("account.adjust")
def account_adjust(tx: Tx, *, key: str, ident: str, amount: int, reason: str,
                   currency: str | None = None) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    return {"id": account_id,
            "balance": ops.adjust(tx, key, account_id, amount, reason, currency=currency)}


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
    return as_data(ops.set_status(tx, key, _resolve(tx, ident), status))


@_command("account.show")
def account_show(tx: Tx, *, ident: str) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    return {"account": as_data(tx.get_account(account_id)),
            "bundles": [as_data(b) for b in tx.bundles(account_id)]}


@_command("account.list")
def account_list(tx: Tx, *, after: str = "", limit: int = LIST_PAGE) -> list[dict[str, Any]]:
    """Accounts in id order, the first `limit` after id `after` (a page: call again from the last)."""
    from balance.records import Account
    cur = tx.read_txn.cursor(db=tx.dbs[ACCOUNTS])
    start = after.encode()
    if not cur.set_range(start):
        return []
    out: list[dict[str, Any]] = []
    for key, raw in cur:
        if key == start:
            continue
        out.append(as_data(Account.unpack(key.decode(), raw)))
        if len(out) >= limit:
            break
    return out


@_command("account.ledger")
def account_ledger(tx: Tx, *, ident: str, after_seq: int = 0) -> dict[str, Any]:
    account_id = _resolve(tx, ident)
    return {"id": account_id, "entries": [as_data(e) for e in tx.ledger(account_id, after_seq)]}


@_command("account.resolve")
def account_resolve(tx: Tx, *, ident: str) -> str:
    return _resolve(tx, ident)


# -- tariffs ------------------------------------------------------------------------------------

@_command("tariff.load")
def tariff_load(tx: Tx, *, text: str, source: str, effective_from: int) -> dict[str, Any]:
    """Store a new tariff version (validated here again: a command may come from any client)."""
    from rating.tariff import TariffError
    from rating.tariff_store import load_in, version_in_force
    try:
        version = load_in(tx.write_txn, tx.dbs[TARIFFS], text, source, effective_from, tx.now)
    except TariffError as exc:
        raise Refused(str(exc)) from None
    return {"version": version, "effective_from": effective_from,
            "in_force": version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)}


@_command("tariff.retire")
def tariff_retire(tx: Tx, *, version: int) -> dict[str, Any]:
    from rating.tariff_store import TariffNotFound, TariffRetireRefused, retire_in, version_in_force
    try:
        at, was = retire_in(tx.write_txn, tx.dbs[TARIFFS], version, tx.now)
    except (TariffNotFound, TariffRetireRefused) as exc:
        raise Refused(str(exc)) from None
    return {"at": at, "already": was,
            "in_force": version_in_force(tx.read_txn, tx.dbs[TARIFFS], tx.now)}
