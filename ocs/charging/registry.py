"""The command registry: names to functions with their roles, and how a command refuses.

Its own module so that command modules (ocs.charging.commands, ocs.charging.queries) register
into one table without importing each other; ocs.charging.commands imports them all and runs
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from balance.store import Tx

Command = Callable[..., Any]
# Refusal kinds (the API's status for each: 422, 404, 409, 401, 403)
INVALID, NOT_FOUND, CONFLICT, UNAUTHORIZED, FORBIDDEN = (
    "invalid", "not_found", "conflict", "unauthorized", "forbidden")
ADMIN = frozenset({"admin"})
STAFF = frozenset({"admin", "crm"})
READERS = frozenset({"admin", "crm", "billing", "readonly"})
MAX_KEY = 500  # bytes: LMDB refuses keys longer than 511, so longer names are simply unknown


class Refused(Exception):
    """The command changed nothing; its message names what is wrong, in one line."""

    def __init__(self, message: str, kind: str = INVALID) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True, frozen=True)
class Spec:
    fn: Command
    roles: frozenset[str]  # API key roles that may run it (the command line may run them all)
    writes: bool           # writes: audited; reads: run in a read txn where no engine runs
    selfcare: bool         # a selfcare key may run it on its own account (args["ident"])
    audited: bool = True   # a write the audit trail records (not the webhook worker's bookkeeping)


COMMANDS: dict[str, Spec] = {}


def command(name: str, roles: frozenset[str] = STAFF, *, writes: bool = True,
            selfcare: bool = False, audited: bool = True) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = Spec(fn, roles, writes, selfcare, audited)
        return fn
    return register


def reads(name: str) -> bool:
    spec = COMMANDS.get(name)
    return spec is not None and not spec.writes


def usable_key(text: str) -> bool:
    """A name that can be looked up at all (not empty, not longer than an LMDB key)."""
    return 0 < len(text.encode()) <= MAX_KEY


def resolve(tx: Tx, ident: str) -> str:
    account_id = tx.resolve(ident) if isinstance(ident, str) and usable_key(ident) else None
    if account_id is None:
        raise Refused(f"unknown account {ident!r}", NOT_FOUND)
    return account_id
