"""The counters the rules keep beside the balance, each in the write txn of what it counts: the
open-session count (meta) and the per-account counters of the "usage" db (month usage per rating
group for tiers, money refundable to events). Values are i64 (balance.schema.pack_i64), signed:
none goes below 0 today (a refund beyond the refundable money is refused, usage only grows, the
session count stops at 0), but the refundable money takes negative deltas and the sign is free."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from balance import schema
from balance.schema import pack_i64, unpack_i64
from ocs.charging.service_units import MAX_SESSION_UNITS

if TYPE_CHECKING:
    import lmdb

    from balance.store import Tx
    from ocs.charging.context import Context
    from rating.tariff import Rate

_U32 = struct.Struct(">I")
OPEN_SESSIONS_KEY = schema.META_OPEN_SESSIONS


def open_sessions(txn: lmdb.Transaction[bytes], dbs: Mapping[str, Any]) -> int:
    """The open-session count in meta (0 before the first session)."""
    raw = txn.get(OPEN_SESSIONS_KEY, db=dbs["meta"])
    return unpack_i64(raw) if raw else 0


def adjust_open_sessions(tx: Tx, dbs: dict[str, Any], delta: int) -> None:
    """The open-session count in meta, kept in the same txn as the sessions it counts."""
    count = max(0, open_sessions(tx.read_txn, dbs) + delta)
    tx.write_txn.put(OPEN_SESSIONS_KEY, pack_i64(count), db=dbs["meta"])


def period_key(account_id: str, now: int, rating_group: int) -> bytes:
    month = datetime.fromtimestamp(now, UTC).strftime("%Y%m")
    return f"{account_id}\0{month}\0".encode() + _U32.pack(rating_group & 0xFFFFFFFF)


def _counter(tx: Tx, ctx: Context, key: bytes) -> int:
    """One of the per-account counters of the "usage" db (month usage, refundable money)."""
    raw = tx.read_txn.get(key, db=ctx.dbs["usage"])
    return unpack_i64(raw) if raw else 0


def _add_to_counter(tx: Tx, ctx: Context, key: bytes, delta: int, cap: int | None = None) -> None:
    total = _counter(tx, ctx, key) + delta
    tx.write_txn.put(key, pack_i64(total if cap is None else min(total, cap)), db=ctx.dbs["usage"])


def period_usage(tx: Tx, ctx: Context, account_id: str, rg: int, rate: Rate) -> int:
    """Units of this rating group the account used this calendar month (UTC); only tiers need it."""
    return _counter(tx, ctx, period_key(account_id, tx.now, rg)) if rate.tiers else 0


def add_period_usage(tx: Tx, ctx: Context, account_id: str, rg: int, used: int) -> None:
    """Record `used` more units; the stored figure never goes backwards (other sessions add too)
    and stops at MAX_SESSION_UNITS (the top tier long before), keeping the kernel in int64."""
    _add_to_counter(tx, ctx, period_key(account_id, tx.now, rg), used, MAX_SESSION_UNITS)


def _refundable_key(account_id: str, rg: int) -> bytes:
    return f"{account_id}\0refund\0".encode() + _U32.pack(rg & 0xFFFFFFFF)  # no month: digits


def refundable(tx: Tx, ctx: Context, account_id: str, rg: int) -> int:
    """Money the account's direct-debited events of this rating group paid, less what was refunded:
    the most a REFUND_ACCOUNT may credit back."""
    return _counter(tx, ctx, _refundable_key(account_id, rg))


def add_refundable(tx: Tx, ctx: Context, account_id: str, rg: int, amount: int) -> None:
    _add_to_counter(tx, ctx, _refundable_key(account_id, rg), amount)
