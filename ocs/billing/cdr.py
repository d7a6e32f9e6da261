"""Charging data records: the record, its LMDB layout, and its columns in exported files.

A CDR is written in the same write transaction as the final debit of a (session, rating group) or of
an EVENT, so a durable debit always has its CDR. Ids are a gap-free sequence drawn inside that
transaction (LMDB serialises writers, also across processes), which makes "everything after id N" the
export checkpoint.

Layout: db "cdrs": key = id as 8-byte big-endian, value = msgpack list in COLUMNS order (amount and
times as integers). db "cdr_index": key = session_id utf-8 + b"\\0" + id (8 bytes BE), value = b"".
db "meta": key b"cdr_seq" = last id (8 bytes BE).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime

import msgpack

from balance import schema
from balance.money import format_micro

_U64 = struct.Struct(">Q")
SEQ_KEY = schema.META_CDR_SEQ


@dataclass(slots=True)
class CDR:
    cdr_id: int
    session_id: str
    account_id: str
    subscription_id: str
    plan: str
    rating_group: int
    service_identifier: int | None
    unit: str                 # seconds | octets | events | money
    used_units: int           # all units used, bundles included
    amount: int               # micro-units of money debited (what bundles covered costs 0)
    currency: str
    tariff_version: int
    start_time: int           # unix seconds, UTC
    end_time: int
    termination_cause: str    # NORMAL | EVENT | REFUND | STALE | CREDIT_LIMIT | ...
    origin_host: str
    bundle_units: int = 0     # of used_units, how many a bundle paid for
    request_type: str = "SESSION"  # SESSION | EVENT


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CDR))


def pack(cdr: CDR) -> bytes:
    return msgpack.packb(astuple(cdr), use_bin_type=True)


def unpack(raw: bytes) -> CDR:
    return CDR(*msgpack.unpackb(raw, raw=False))


def key(cdr_id: int) -> bytes:
    return _U64.pack(cdr_id)


def next_id(txn, meta_db) -> int:  # type: ignore[no-untyped-def]
    raw = txn.get(SEQ_KEY, db=meta_db)
    nxt = (_U64.unpack(raw)[0] if raw else 0) + 1
    txn.put(SEQ_KEY, _U64.pack(nxt), db=meta_db)
    return nxt


def write(txn, dbs, cdr: CDR) -> int:  # type: ignore[no-untyped-def]
    """Assign the next id and store the CDR and its session index entry; call inside the debit's txn.

    `dbs` maps "cdrs", "cdr_index", "meta" to LMDB handles.
    """
    cdr.cdr_id = next_id(txn, dbs["meta"])
    k = _U64.pack(cdr.cdr_id)
    txn.put(k, pack(cdr), db=dbs["cdrs"])
    txn.put(cdr.session_id.encode() + b"\0" + k, b"", db=dbs["cdr_index"])
    return cdr.cdr_id


def iter_from(txn, cdrs_db, after_id: int = 0) -> Iterator[CDR]:  # type: ignore[no-untyped-def]
    """CDRs with id > after_id, in id order."""
    cur = txn.cursor(db=cdrs_db)
    if not cur.set_range(_U64.pack(after_id + 1)):
        return
    for _k, v in cur:
        yield unpack(v)


def by_session(txn, dbs, session_id: str) -> list[CDR]:  # type: ignore[no-untyped-def]
    prefix = session_id.encode() + b"\0"
    out = []
    cur = txn.cursor(db=dbs["cdr_index"])
    if cur.set_range(prefix):
        for k in cur.iternext(keys=True, values=False):
            if not k.startswith(prefix):
                break
            raw = txn.get(k[len(prefix):], db=dbs["cdrs"])
            if raw is not None:
                out.append(unpack(raw))
    return out


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_row(cdr: CDR) -> dict[str, object]:
    """The file form: amounts as 6-decimal strings, times as ISO 8601 UTC, the rest as is."""
    row = dict(zip(COLUMNS, astuple(cdr), strict=True))
    row["amount"] = format_micro(cdr.amount)
    row["start_time"] = iso(cdr.start_time)
    row["end_time"] = iso(cdr.end_time)
    return row
