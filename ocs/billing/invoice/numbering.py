"""Gap-free invoice numbers, stored in LMDB (db "export", keys b"inv_seq" and b"inv:PERIOD\\0ACCOUNT").

Numbers for a run are assigned in one durable write txn, in account id order, before any document is
written; a re-run of the period finds the same numbers (idempotent), and an account that first shows
up in a later run of the period gets the next number. A run that fails after numbering leaves no gap:
its re-run renders the same numbers. A number's first assignment emits `invoice.issued` (webhooks).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from balance import schema
from balance.schema import pack_i64, unpack_i64
from ocs.charging import outbox

if TYPE_CHECKING:
    from balance.store import Store, Tx

SEQ = schema.INVOICE_SEQ
PREFIX = schema.INVOICE_PREFIX


def _key(period: str, account_id: str) -> bytes:
    return PREFIX + period.encode() + b"\0" + account_id.encode()


def format_number(n: int) -> str:
    return f"INV-{n:08d}"


def assign(store: Store, period: str, account_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(account_ids))

    def fn(tx: Tx) -> dict[str, str]:
        raw = tx.get("export", SEQ)
        seq = unpack_i64(raw) if raw else 0
        out = {}
        for a in ids:
            got = tx.get("export", _key(period, a))
            if got is None:
                seq += 1
                tx.put("export", _key(period, a), pack_i64(seq))
                n = seq
                # announced with its number, in the txn that issues it (documents follow)
                outbox.emit(tx.write_txn, tx.dbs, "invoice.issued", at=tx.now, account=a,
                            data={"number": format_number(n), "period": period})
            else:
                n = unpack_i64(got)
            out[a] = format_number(n)
        tx.put("export", SEQ, pack_i64(seq))
        return out
    return store.execute(fn)


def last_number(store: Store) -> int:
    with store.read() as view:
        raw = view.get("export", SEQ)
    return unpack_i64(raw) if raw else 0
