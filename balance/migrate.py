"""The environment's format version (balance.schema.SCHEMA_VERSION) and the migration up to it.

open_store checks the version of every environment it opens, in a read txn (nothing to do when it
is current, no writer lock taken). A writable open of an older environment migrates it in ONE
write txn: every rewritten value and the new version commit together, so a crash (kill -9, power
cut) leaves the old format or the new, never a mix, and the next open migrates again. The version
is read again inside that txn, so processes of one server opening at once migrate it only once.

A read-only open cannot write, so it refuses an older environment with one line (open it writable
once) rather than teach every reader two formats: the counters are read per request, and the
only read-only openers (bench's) open environments this code wrote. A newer version than the code
knows is refused by every open: its values would be misread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lmdb
import msgpack

from balance.schema import (
    BUNDLES,
    EXPORT,
    EXPORT_CONSUMER_PREFIX,
    EXPORT_RAN,
    META,
    META_OPEN_SESSIONS,
    META_SCHEMA_VERSION,
    SCHEMA_VERSION,
    USAGE,
    pack_i64,
    unpack_i64,
)

log = logging.getLogger(__name__)

FIRST_VERSION = 1   # what an environment without META_SCHEMA_VERSION holds


class StoreFormatError(ValueError):
    """The environment's format cannot be used by this code as it is opened; one line."""


def stored_version(txn: lmdb.Transaction[bytes], dbs: Mapping[str, Any]) -> int:
    """The format version the environment holds (FIRST_VERSION when none is stored)."""
    db = dbs.get(META)
    raw = None if db is None else txn.get(META_SCHEMA_VERSION, db=db)
    return FIRST_VERSION if raw is None else unpack_i64(raw)


def check(path: str, version: int, readonly: bool) -> bool:
    """Whether the environment needs migrating; StoreFormatError when it cannot be opened so."""
    if version > SCHEMA_VERSION:
        raise StoreFormatError(f"{path}: data format version {version} is newer than this OCS "
                               f"knows ({SCHEMA_VERSION}); upgrade OCS to open it")
    if version < FIRST_VERSION:
        raise StoreFormatError(f"{path}: unknown data format version {version}")
    if version < SCHEMA_VERSION and readonly:
        raise StoreFormatError(f"{path}: data format version {version} is older than this OCS's "
                               f"({SCHEMA_VERSION}); open it once writable (e.g. `ocs serve`) to "
                               "migrate it")
    return version < SCHEMA_VERSION


def migrate(path: str, txn: lmdb.Transaction[bytes], dbs: Mapping[str, Any]) -> int:
    """Bring the environment to SCHEMA_VERSION in this write txn; how many values were rewritten
    (0 and nothing written when it is current). The caller commits."""
    version = stored_version(txn, dbs)
    if not check(path, version, readonly=False):
        return 0
    rewritten = 0
    if version == 1:
        rewritten += _v1_to_v2(path, txn, dbs)
    if version <= 2:
        rewritten += _v2_to_v3(path, txn, dbs)
    txn.put(META_SCHEMA_VERSION, pack_i64(SCHEMA_VERSION), db=dbs[META])
    log.info("%s: data format migrated from version %d to %d (%d values rewritten)",
             path, version, SCHEMA_VERSION, rewritten)
    return rewritten


def _v1_to_v2(path: str, txn: lmdb.Transaction[bytes], dbs: Mapping[str, Any]) -> int:
    """Decimal ASCII (USAGE values, the open-session count) and msgpack (every consumer's
    EXPORT_RAN) integers to i64."""
    rewritten = 0
    cur = txn.cursor(db=dbs[USAGE])
    more = cur.first()
    while more:   # a put through the cursor leaves it on the record it rewrote
        key, raw = cur.item()
        cur.put(key, pack_i64(_decimal(path, USAGE, key, raw)))
        rewritten += 1
        more = cur.next()
    count = txn.get(META_OPEN_SESSIONS, db=dbs[META])
    if count is not None:
        txn.put(META_OPEN_SESSIONS, pack_i64(_decimal(path, META, META_OPEN_SESSIONS, count)),
                db=dbs[META])
        rewritten += 1
    export = dbs[EXPORT]
    bare = txn.get(EXPORT_RAN, db=export)   # the consumer "server-files"
    ran = [] if bare is None else [(EXPORT_RAN, bare)]
    cur = txn.cursor(db=export)
    if cur.set_range(EXPORT_CONSUMER_PREFIX):   # c/ + name + / + key; a name holds no "/"
        for key, raw in cur:
            if not key.startswith(EXPORT_CONSUMER_PREFIX):
                break
            if key[len(EXPORT_CONSUMER_PREFIX):].split(b"/", 1)[1:] == [EXPORT_RAN]:
                ran.append((key, raw))
    for key, raw in ran:   # after the scan: a consumer has few keys, a server a few consumers
        txn.put(key, pack_i64(_msgpack_int(path, key, raw)), db=export)
        rewritten += 1
    return rewritten


def _v2_to_v3(path: str, txn: lmdb.Transaction[bytes], dbs: Mapping[str, Any]) -> int:
    """Bundles gain their initial amount: 0 (not known) for those sold before it was kept, so
    bundle.threshold skips them and bundle.exhausted still fires."""
    rewritten = 0
    cur = txn.cursor(db=dbs[BUNDLES])
    more = cur.first()
    while more:
        key, raw = cur.item()
        fields = msgpack.unpackb(raw)
        if not isinstance(fields, list) or len(fields) not in (8, 9):
            raise StoreFormatError(f"{path}: cannot migrate {BUNDLES} {key!r}: not a bundle")
        if len(fields) == 8:
            cur.put(key, msgpack.packb([*fields, 0]))
            rewritten += 1
        more = cur.next()
    return rewritten


def _decimal(path: str, db: str, key: bytes, raw: bytes) -> int:
    """A version-1 decimal ASCII integer (empty read as 0, as its readers did)."""
    try:
        return int(raw) if raw else 0
    except ValueError:
        raise StoreFormatError(f"{path}: cannot migrate {db} {key!r}: {raw!r} is not a decimal "
                               "integer") from None


def _msgpack_int(path: str, key: bytes, raw: bytes) -> int:
    try:
        value = msgpack.unpackb(raw)
    except Exception:   # msgpack raises several unrelated types for bad bytes
        value = None
    if type(value) is not int:
        raise StoreFormatError(f"{path}: cannot migrate {EXPORT} {key!r}: {raw!r} is not a "
                               "msgpack integer")
    return value
