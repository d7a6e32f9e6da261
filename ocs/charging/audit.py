"""The audit trail: one entry per change made through a command (CLI or API), appended in the
same transaction as the change, so an entry exists exactly when its change does. Never edited.

Entry (msgpack map): at (unix s), actor (`key:NAME` for an API key, `cli:USER` for the command
line), command, account (when the command names one), idempotency key, request id, outcome (a
short summary of the result). Keys are be8 positions 1, 2, 3 ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from balance.schema import AUDIT, pack_be8
from balance.store import append_at_tail


def append(txn: Any, dbs: dict[str, Any], entry: dict[str, Any]) -> int:
    return append_at_tail(txn, dbs[AUDIT], msgpack.packb(entry, use_bin_type=True))


def entries(txn: Any, dbs: dict[str, Any], *, after: int = 0, since: int | None = None,
            account: str | None = None, limit: int = 1000) -> Iterator[tuple[int, dict[str, Any]]]:
    cur = txn.cursor(db=dbs[AUDIT])
    if not cur.set_range(pack_be8(after + 1)):
        return
    n = 0
    for k, v in cur:
        e: dict[str, Any] = msgpack.unpackb(v, raw=False)
        if (since is not None and e["at"] < since) or (account is not None and e.get("account") != account):
            continue
        yield int.from_bytes(k, "big"), e
        n += 1
        if n >= limit:
            return
