"""`ocs account ...`: provision and inspect accounts.

Works with or without a server running: each command is one of ocs.charging.commands, sent to the
server's engine while one runs (it applies it in its batch order, durably, before answering) and
run in one durable LMDB transaction here when none does; either way it is in force for the next
request.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from balance.money import MoneyError, format_micro, to_micro
from balance.records import UNITS, Account, Bundle, LedgerEntry
from ocs.charging.commands import NO_TARIFF
from ocs.cli.common import (
    CommandError,
    Subparsers,
    add_data_arg,
    engine,
    format_instant,
    parse_instant,
    require_data,
)

if TYPE_CHECKING:
    from ocs.charging.control.client import Runner

IMPORT_BATCH = 1000  # accounts per write txn when importing


# -- helpers ----------------------------------------------------------------------------------

E164 = re.compile(r"[0-9]{1,15}")
ID_FORMATS = ("e164", "any")


def _engine(args: argparse.Namespace, *, provisioning: bool = False) -> AbstractContextManager[Runner]:
    """The engine (or the store) of --data: no account command creates one (a typo must not start
    an empty system); provisioning needs a tariff, whose `ocs tariff load` creates the store."""
    if provisioning:
        try:
            require_data(args.data)
        except CommandError as exc:
            raise CommandError(f"{exc}; {NO_TARIFF}") from None
    return engine(args.data)


def _check_id(ident: str, id_format: str, where: str = "") -> None:
    if id_format == "e164" and not E164.fullmatch(ident):
        raise CommandError(f"{where}bad account id {ident!r}: an E.164 number is 1-15 digits "
                           "(no '+' or spaces); --id-format any accepts other ids")


def _opening_balance(text: str, where: str = "") -> int:
    at = f"{where}: " if where else ""
    try:
        balance = to_micro(text)
    except MoneyError as exc:
        raise CommandError(f"{at}bad balance: {exc}") from None
    if balance < 0:
        raise CommandError(f"{at}bad balance {text.strip()!r}: an opening balance must not be "
                           "negative (a credit limit is the way to let an account go below zero)")
    return balance


def _amount(text: str, what: str = "amount") -> int:
    try:
        return to_micro(text)
    except MoneyError as exc:
        raise CommandError(f"bad {what}: {exc}") from None


def _instant(text: str | None, what: str) -> int | None:
    return None if text is None else parse_instant(text, what)


def _iso(ts: int | None) -> str | None:
    return None if ts is None else format_instant(ts)


def _key(args: argparse.Namespace) -> str:
    return getattr(args, "idempotency_key", None) or f"cli:{uuid.uuid4()}"


def _bundle_json(b: Bundle) -> dict[str, Any]:
    money = b.unit == "money"
    return {"id": b.id, "unit": b.unit,
            "remaining": format_micro(b.remaining) if money else b.remaining,
            "reserved": format_micro(b.reserved) if money else b.reserved,
            "rating_groups": b.rating_groups, "priority": b.priority,
            "valid_from": _iso(b.valid_from), "expires": _iso(b.expires)}


def _account_json(a: Account, bundles: list[Bundle]) -> dict[str, Any]:
    return {"id": a.id, "currency": a.currency, "balance": format_micro(a.balance),
            "reserved": format_micro(a.reserved), "available": format_micro(a.available),
            "credit_limit": format_micro(a.credit_limit), "plan": a.plan, "status": a.status,
            "aliases": a.aliases, "created": _iso(a.created), "updated": _iso(a.updated),
            "bundles": [_bundle_json(b) for b in bundles]}


# -- commands ---------------------------------------------------------------------------------

def cmd_create(args: argparse.Namespace) -> int:
    _check_id(args.id, args.id_format)
    balance = _opening_balance(args.balance)
    limit = _amount(args.credit_limit, "credit limit") if args.credit_limit else 0
    if limit < 0:
        raise CommandError(f"bad credit limit {args.credit_limit!r}: must not be negative")
    with _engine(args, provisioning=True) as run:
        acct = run.run("account.create", key=_key(args), account_id=args.id,
                       currency=args.currency.upper(), balance=balance, credit_limit=limit,
                       plan=args.plan, aliases=args.imsi or [])
    print(f"created {acct['id']} balance {format_micro(acct['balance'])} {acct['currency']}")
    return 0


def cmd_topup(args: argparse.Namespace) -> int:
    amount = _amount(args.amount)
    if amount <= 0:
        raise CommandError(f"bad amount {args.amount!r}: a top-up must be positive")
    with _engine(args) as run:
        done = run.run("account.topup", key=_key(args), ident=args.id, amount=amount,
                       reason=args.reason, currency=args.currency.upper() if args.currency else None)
    print(f"{done['id']} balance {format_micro(done['balance'])}")
    return 0


def cmd_adjust(args: argparse.Namespace) -> int:
    amount = _amount(args.amount)
    if amount == 0:
        raise CommandError("bad amount '0': an adjustment must not be zero")
    with _engine(args) as run:
        done = run.run("account.adjust", key=_key(args), ident=args.id, amount=amount,
                       reason=args.reason, currency=args.currency.upper() if args.currency else None)
    print(f"{done['id']} balance {format_micro(done['balance'])}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    if args.unit == "money":
        amount = _amount(args.amount)
    else:
        try:
            amount = int(args.amount)
        except ValueError:
            raise CommandError(f"bad amount {args.amount!r}: {args.unit} are a whole number") from None
    if amount <= 0:
        raise CommandError(f"bad amount {args.amount!r}: must be positive")
    expires = _instant(args.expires, "--expires")
    valid_from = _instant(args.valid_from, "--valid-from")
    if expires is not None and expires <= time.time():
        raise CommandError(f"bad --expires {args.expires!r}: already past (now "
                           f"{format_instant(int(time.time()))}); such a bundle could never be used")
    with _engine(args) as run:
        done = run.run("account.bundle", key=_key(args), ident=args.id, unit=args.unit,
                       amount=amount, rating_groups=args.rating_group or [],
                       valid_from=valid_from, expires=expires, priority=args.priority)
    print(f"{done['id']} bundle {done['bundle']}: {args.amount} {args.unit}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _engine(args) as run:
        found = run.run("account.show", ident=args.id)
    acct = Account(**found["account"])
    doc = _account_json(acct, [Bundle(**b) for b in found["bundles"]])
    if args.json:
        print(json.dumps(doc))
        return 0
    for field in ("id", "currency", "balance", "reserved", "available", "credit_limit", "plan",
                  "status"):
        print(f"{field:13} {doc[field]}")
    print(f"{'aliases':13} {' '.join(acct.aliases) or '-'}")
    for b in doc["bundles"]:
        rgs = ",".join(map(str, b["rating_groups"])) or "all"
        print(f"bundle {b['id']:>6} {b['unit']:8} remaining {b['remaining']} reserved "
              f"{b['reserved']} rg {rgs} priority {b['priority']} expires {b['expires'] or 'never'}")
    return 0


def _all_accounts(run: Runner) -> Iterator[Account]:
    """Every account in id order, a page per command (a million accounts is not one answer)."""
    after = ""
    while True:
        page = run.run("account.list", after=after)
        for doc in page:
            yield Account(**doc)
        if not page:
            return
        after = page[-1]["id"]


def cmd_list(args: argparse.Namespace) -> int:
    with _engine(args) as run:
        accounts = list(_all_accounts(run))
    if args.json:
        print(json.dumps([{"id": a.id, "currency": a.currency, "balance": format_micro(a.balance),
                           "reserved": format_micro(a.reserved),
                           "available": format_micro(a.available), "plan": a.plan,
                           "status": a.status} for a in accounts]))
        return 0
    for a in accounts:
        print(f"{a.id:20} {a.currency} {format_micro(a.balance):>20} available "
              f"{format_micro(a.available):>20} {a.status:9} {a.plan}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    with _engine(args) as run:
        found = run.run("account.ledger", ident=args.id)
    entries = [LedgerEntry(**e) for e in found["entries"]]
    rows = [{"seq": e.seq, "time": _iso(e.ts), "kind": e.kind, "delta": format_micro(e.delta),
             "balance": format_micro(e.balance), "reserved_delta": format_micro(e.reserved_delta),
             "reserved": format_micro(e.reserved), "bundles": e.bundles, "session": e.session_id,
             "rating_group": e.rating_group,
             "ref": e.ref.hex() if isinstance(e.ref, bytes) else e.ref, "reason": e.reason}
            for e in entries]
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        print(f"{r['seq']:6} {r['time']} {r['kind']:8} {r['delta']:>18} -> {r['balance']:>18} "
              f"reserved {r['reserved']:>14} {r['session'] or ''} {r['reason']}")
    return 0


def _status(status: str) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        with _engine(args) as run:
            acct = run.run("account.status", key=_key(args), ident=args.id, status=status)
        print(f"{acct['id']} {acct['status']}")
        return 0
    return cmd


def _parse_import(path: str, id_format: str) -> tuple[list[dict[str, Any]], str]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    digest = hashlib.sha256(raw).hexdigest()[:16]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CommandError(f"{path}: not UTF-8 text") from None
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, cells in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in cells]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if lineno == 1 and cells[0].lower() == "id":
            continue
        where = f"{path}:{lineno}"
        if len(cells) < 2 or len(cells) > 6:
            raise CommandError(f"{where}: expected id,balance[,currency,plan,imsi,credit_limit]")
        cells += [""] * (6 - len(cells))
        ident, balance, currency, plan, imsi, limit = cells
        if not ident:
            raise CommandError(f"{where}: empty id")
        _check_id(ident, id_format, f"{where}: ")
        row: dict[str, Any]
        try:
            row = {"account_id": ident, "balance": _opening_balance(balance, where),
                   "currency": (currency or "EUR").upper(), "plan": plan or "default",
                   "aliases": [imsi] if imsi else [],
                   "credit_limit": to_micro(limit, allow_negative=False) if limit else 0}
        except MoneyError as exc:
            raise CommandError(f"{where}: {exc}") from None
        for name in [ident, *row["aliases"]]:
            if name in seen:
                raise CommandError(f"{where}: {name!r} already on line {seen[name]}")
            seen[name] = lineno
        row["line"], row["lineno"] = where, lineno
        rows.append(row)
    return rows, digest


def cmd_import(args: argparse.Namespace) -> int:
    """Validate every row (and against the store) first, then create in batched txns. Each row's
    idempotency key is derived from the file's hash, so rerunning an interrupted import resumes."""
    from tqdm import tqdm

    rows, digest = _parse_import(args.file, args.id_format)

    def key(row: dict[str, Any]) -> str:  # the file's content and the row, not the path as typed
        return f"import:{digest}:{row['lineno']}"

    def fields(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in ("line", "lineno")}

    for row in rows:
        row["key"], row["where"] = key(row), row["line"]
    payload = [fields(row) for row in rows]
    with _engine(args, provisioning=True) as run:
        # dry run: every row through the real op, with its real key, then thrown away; rows an
        # interrupted run of this same file created replay, any other existing id refuses
        for start in range(0, len(payload), IMPORT_BATCH):
            run.run("account.import", rows=payload[start:start + IMPORT_BATCH], dry_run=True)
        done = 0
        with tqdm(total=len(rows), unit="acct", desc="import", disable=None, file=sys.stderr) as bar:
            for start in range(0, len(payload), IMPORT_BATCH):
                chunk = payload[start:start + IMPORT_BATCH]
                try:
                    run.run("account.import", rows=chunk, dry_run=False)
                except CommandError as exc:
                    raise CommandError(f"{args.file}: import stopped after {done} accounts "
                                       f"(rerun resumes): {exc}") from None
                done += len(chunk)
                bar.update(len(chunk))
    print(f"imported {done} accounts from {args.file}")
    return 0


# -- argparse ---------------------------------------------------------------------------------

def register(sub: Subparsers) -> None:
    p = sub.add_parser("account", help="create, top up, inspect and import accounts")
    cmds = p.add_subparsers(dest="account_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        c = cmds.add_parser(name, help=help)
        add_data_arg(c)
        c.set_defaults(func=func)
        return c

    def idem(c: argparse.ArgumentParser) -> None:
        c.add_argument("--idempotency-key", metavar="KEY",
                       help="retry-safe key: repeating a command with it changes nothing")

    def id_format(c: argparse.ArgumentParser) -> None:
        c.add_argument("--id-format", choices=ID_FORMATS, default="e164",
                       help="e164 (default): ids are 1-15 digits; any: any non-empty id")

    c = add("create", cmd_create, "create an account")
    c.add_argument("id", help="account id (E.164 MSISDN)")
    c.add_argument("--balance", required=True, metavar="AMOUNT", help="opening balance, e.g. 10.00")
    c.add_argument("--currency", default="EUR", help="ISO 4217 code (default EUR)")
    c.add_argument("--plan", default="default", help="tariff plan name")
    c.add_argument("--imsi", action="append", metavar="IMSI", help="alias (repeatable)")
    c.add_argument("--credit-limit", metavar="AMOUNT", help="postpaid: may go down to -AMOUNT")
    id_format(c)
    idem(c)

    c = add("topup", cmd_topup, "credit money")
    c.add_argument("id")
    c.add_argument("amount", metavar="AMOUNT")
    c.add_argument("--currency", help="refuse unless the account is in this currency")
    c.add_argument("--reason", default="topup")
    idem(c)

    c = add("adjust", cmd_adjust, "operator correction, positive or negative")
    c.add_argument("id")
    c.add_argument("amount", metavar="AMOUNT")
    c.add_argument("--reason", required=True, metavar="TEXT")
    c.add_argument("--currency", help="refuse unless the account is in this currency")
    idem(c)

    c = add("bundle", cmd_bundle, "grant an allowance")
    c.add_argument("id")
    c.add_argument("--unit", required=True, choices=UNITS)
    c.add_argument("--amount", required=True, metavar="N", help="units (money: decimal amount)")
    c.add_argument("--rating-group", type=int, nargs="+", action="extend", metavar="RG",
                   help="rating groups it applies to (default: all)")
    c.add_argument("--valid-from", metavar="ISO8601")
    c.add_argument("--expires", metavar="ISO8601")
    c.add_argument("--priority", type=int, default=0, help="higher is used first (default 0)")
    idem(c)

    c = add("show", cmd_show, "balance, reservations and bundles of one account")
    c.add_argument("id", help="account id or alias")
    c.add_argument("--json", action="store_true")

    c = add("list", cmd_list, "every account")
    c.add_argument("--json", action="store_true")

    c = add("ledger", cmd_ledger, "the journal of one account")
    c.add_argument("id")
    c.add_argument("--json", action="store_true")

    c = add("import", cmd_import, "bulk create from CSV: id,balance[,currency,plan,imsi,credit_limit]")
    c.add_argument("file", metavar="FILE.csv")
    id_format(c)

    for name, status in (("suspend", "suspended"), ("activate", "active"), ("close", "closed")):
        c = add(name, _status(status), f"set status {status}")
        c.add_argument("id")
        idem(c)
