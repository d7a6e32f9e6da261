"""The CDRs in LMDB: key and value encoding, the id sequence, reads by id and by session.

Ids are a gap-free sequence drawn inside the debit's write transaction (LMDB serialises writers, also
across processes), which makes "everything after id N" the export checkpoint. This module is the
only reader and writer of these bytes; the db names and the sequence key are declared in
balance.schema:

  db "cdrs":      key = id as 8-byte big-endian, value = msgpack list in COLUMNS order (amount and
                  times as integers).
  db "cdr_index": key = session_id utf-8 + b"\\0" + id (8 bytes BE), value = b"".
  db "meta":      key b"cdr_seq" = last id drawn (8 bytes BE).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import astuple
from typing import TYPE_CHECKING, Any

import msgpack

from balance import schema
from ocs.billing.cdr.record import CDR

if TYPE_CHECKING:
    import lmdb

    Txn = lmdb.Transaction[bytes]
    Db = lmdb._Database

_U64 = struct.Struct(">Q")
SEQ_KEY = schema.META_CDR_SEQ


def key(cdr_id: int) -> bytes:
    return _U64.pack(cdr_id)


def id_of(k: bytes) -> int:
    """The CDR id of a "cdrs" key."""
    return int.from_bytes(k, "big")


def pack(cdr: CDR) -> bytes:
    raw: bytes = msgpack.packb(astuple(cdr), use_bin_type=True)  # msgpack is untyped: packb gives bytes
    return raw


def values(raw: bytes) -> list[Any]:
    """A stored value as its column list (COLUMNS order, amount and times as integers): what the
    file writers take, so the export builds no CDR object per record."""
    vals: list[Any] = msgpack.unpackb(raw, raw=False)  # msgpack is untyped: a stored CDR is a list
    return vals


def unpack(raw: bytes) -> CDR:
    return CDR(*values(raw))


def next_id(txn: Txn, meta_db: Db) -> int:
    raw = txn.get(SEQ_KEY, db=meta_db)
    nxt = (schema.unpack_i64(raw) if raw else 0) + 1
    txn.put(SEQ_KEY, schema.pack_i64(nxt), db=meta_db)
    return int(nxt)


def write(txn: Txn, dbs: Mapping[str, Any], cdr: CDR) -> int:
    """Assign the next id and store the CDR and its session index entry; call inside the debit's txn.

    `dbs` maps "cdrs", "cdr_index", "meta" to LMDB handles.
    """
    cdr.cdr_id = next_id(txn, dbs[schema.META])
    k = _U64.pack(cdr.cdr_id)
    txn.put(k, pack(cdr), db=dbs[schema.CDRS])
    txn.put(cdr.session_id.encode() + b"\0" + k, b"", db=dbs[schema.CDR_INDEX])
    return cdr.cdr_id


def get(txn: Txn, cdrs_db: Db, cdr_id: int) -> CDR | None:
    raw = txn.get(key(cdr_id), db=cdrs_db)
    return None if raw is None else unpack(raw)


def stored_from(txn: Txn, cdrs_db: Db, first_id: int) -> Iterator[tuple[int, list[Any]]]:
    """(id, column values) of the CDRs with id >= first_id, in id order, decoded one at a time."""
    cur = txn.cursor(db=cdrs_db)
    if not cur.set_range(key(first_id)):
        return
    for k, v in cur:
        yield id_of(k), values(v)


def iter_from(txn: Txn, cdrs_db: Db, after_id: int = 0) -> Iterator[CDR]:
    """CDRs with id > after_id, in id order."""
    cur = txn.cursor(db=cdrs_db)
    if not cur.set_range(key(after_id + 1)):
        return
    for _k, v in cur:
        yield unpack(v)


def first_id(txn: Txn, cdrs_db: Db) -> int:
    """The oldest CDR kept (1 unless CDRs were ever removed); 0 when there is none."""
    cur = txn.cursor(db=cdrs_db)
    return id_of(cur.key()) if cur.first() else 0


def last_id(txn: Txn, cdrs_db: Db) -> int:
    """The newest CDR stored; 0 when there is none."""
    cur = txn.cursor(db=cdrs_db)
    return id_of(cur.key()) if cur.last() else 0


def by_session(txn: Txn, dbs: Mapping[str, Any], session_id: str) -> list[CDR]:
    """A session's CDRs in id order, through the session index."""
    prefix = session_id.encode() + b"\0"
    out = []
    cur = txn.cursor(db=dbs[schema.CDR_INDEX])
    if cur.set_range(prefix):
        for k in cur.iternext(keys=True, values=False):
            if not k.startswith(prefix):
                break
            raw = txn.get(k[len(prefix):], db=dbs[schema.CDRS])
            if raw is not None:
                out.append(unpack(raw))
    return out
