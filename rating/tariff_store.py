"""Tariff versions in LMDB (named db "tariffs"): load, list, and the Rater in force at an instant.

Keys: b"counter" -> latest version (8 bytes big-endian); b"v" + version -> msgpack record (source
text, effective_from, loaded_at, file name, sha256); b"e" + version -> effective_from (8 bytes) so the
schedule is read without unpacking every text; b"r" + version -> when it was retired (8 bytes);
b"changes" -> a count of every load and retirement (8 bytes), the one key a charging process reads
per batch to know whether its schedule is still the stored one. Versions are never rewritten or
deleted: old ones stay for audit and re-rating; a retired one is never chosen again.

Which version is in force at instant t: among versions not retired, the one with the greatest
effective_from <= t, ties going to the higher version. So a version loaded with a future
effective_from is a scheduled change, and a later load effective now corrects the current prices
without cancelling it.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb
import msgpack

from balance.schema import (
    TARIFF_CHANGES,
    TARIFF_COUNTER,
    pack_be8,
    pack_i64,
    unpack_i64,
)
from rating.rater import Rater, rater_for
from rating.tariff import WILDCARD, parse_tariff

if TYPE_CHECKING:
    from balance.store import Store

T = TypeVar("T")

_COUNTER = TARIFF_COUNTER
_CHANGES = TARIFF_CHANGES


class TariffNotFound(LookupError):
    """No such tariff version, or none in force at that instant."""


class TariffRetireRefused(ValueError):
    """Retiring that version would leave no version in force now."""


def _bump_changes(txn: lmdb.Transaction[bytes], db: lmdb._Database) -> None:
    raw = txn.get(_CHANGES, db=db)
    txn.put(_CHANGES, pack_i64((unpack_i64(raw) if raw else 0) + 1), db=db)


def _vkey(prefix: bytes, version: int) -> bytes:
    return prefix + pack_be8(version)


class TariffStore:
    """Versions in the "tariffs" db; compiled Raters cached per version, recompiled only on change."""

    def __init__(self, env: Store | lmdb.Environment, db: lmdb._Database | None = None) -> None:
        """`env` is a balance.store.Store (preferred: its map growth and resize handling apply) or a
        raw lmdb.Environment with `db` the opened "tariffs" database."""
        self._store: Store | None
        self._env: lmdb.Environment
        self._db: lmdb._Database
        if isinstance(env, lmdb.Environment):
            if db is None:
                db = env.open_db(b"tariffs")
            self._store = None
            self._env, self._db = env, db
        else:
            self._store = env
            self._env, self._db = env.env, (db if db is not None else env.db("tariffs"))
        self._changes = -1  # the change count the schedule below was read at
        self._schedule: list[tuple[int, int]] = []      # sorted (effective_from, version)
        self._raters: dict[int, Rater] = {}

    # -- transactions (through the balance Store when we have one) ------------------------------
    def _read(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        if self._store is not None:
            with self._store.read() as view:
                return fn(view.txn)
        with self._env.begin(db=self._db) as txn:
            return fn(txn)

    def _write(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        if self._store is not None:
            return self._store.execute(lambda tx: fn(tx.txn))
        with self._env.begin(write=True, db=self._db) as txn:
            return fn(txn)

    # -- writes ---------------------------------------------------------------------------------
    def load(self, text: str, source: str, effective_from: int | None = None) -> int:
        """Validate `text` (TariffError on a problem, nothing stored) and store it as a new version."""
        parse_tariff(text, source)
        now = int(time.time())
        eff = now if effective_from is None else int(effective_from)
        return self._write(lambda txn: load_in(txn, self._db, text, source, eff, now))

    def retire(self, version: int, now: int | None = None) -> int:
        """Retire a version: it is never chosen for new sessions again (sessions already rating
        with it keep it). Returns when it was retired (the earlier time if it already was);
        TariffNotFound if there is no such version, TariffRetireRefused if no version would be in
        force now without it (load its successor first)."""
        at = int(time.time()) if now is None else now
        return self._write(lambda txn: retire_in(txn, self._db, version, at)[0])

    # -- reads ----------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """One read txn: the change count; the schedule is re-read only when it moved."""
        db = self._db

        def read(txn: lmdb.Transaction[bytes]) -> tuple[int, list[tuple[int, int]] | None]:
            raw = txn.get(_CHANGES, db=db)
            changes: int = unpack_i64(raw) if raw else 0
            return changes, (None if changes == self._changes else _schedule(txn, db))

        changes, schedule = self._read(read)
        if schedule is not None:
            self._schedule = schedule
            self._changes = changes

    def changes(self) -> int:
        """The change count alone: the per-batch check of a charging process (about 1 µs, one
        bare read txn; the store's guarded read only when the map was grown under us)."""
        try:
            with self._env.begin(db=self._db) as txn:
                raw = txn.get(_CHANGES)
        except lmdb.MapResizedError:
            raw = self._read(lambda txn: txn.get(_CHANGES, db=self._db))
        changes: int = unpack_i64(raw) if raw else 0
        return changes

    def _version_at(self, instant: int) -> int | None:
        return _in_force(self._schedule, instant)

    def next_change_after(self, instant: int) -> int | None:
        """The next effective_from after `instant` in the schedule as last read (None: none)."""
        i = bisect.bisect_right(self._schedule, (instant, 1 << 62))
        return self._schedule[i][0] if i < len(self._schedule) else None

    def current(self, now: int | None = None) -> Rater | None:
        """The Rater in force now; cheap when nothing changed (one read txn, a bisect, a dict get)."""
        self._refresh()
        version = self._version_at(int(time.time()) if now is None else now)
        if version is None:
            return None
        rater = self._raters.get(version)
        return rater if rater is not None else self.get(version)

    def at(self, instant: int) -> Rater | None:
        """The Rater that was (or will be) in force at `instant`, for audit and re-rating."""
        return self.current(instant)

    def record(self, version: int) -> dict[str, Any]:
        """The stored record of a version (text, effective_from, ...); TariffNotFound if absent."""
        db = self._db
        raw = self._read(lambda txn: txn.get(_vkey(b"v", version), db=db))
        if raw is None:
            raise TariffNotFound(f"no tariff version {version}")
        rec: dict[str, Any] = msgpack.unpackb(raw)  # msgpack is untyped; load() wrote a str-keyed map
        return rec

    def get(self, version: int) -> Rater:
        """The compiled Rater of a version (compiled once, then cached)."""
        rater = self._raters.get(version)
        if rater is None:
            rec = self.record(version)
            tariff = parse_tariff(rec["text"], rec["source"])
            rater = rater_for(tariff, version, rec["effective_from"])
            self._raters[version] = rater
        return rater

    def list(self) -> list[dict[str, Any]]:
        """Every version's metadata (no text), oldest first."""
        return self._read(lambda txn: records_in(txn, self._db))


# -- the same, inside a transaction the caller holds (the engine's batch, a CLI command) ----------

def load_in(txn: lmdb.Transaction[bytes], db: lmdb._Database, text: str, source: str,
            effective_from: int, now: int) -> int:
    """Store `text` as a new version effective from `effective_from`; TariffError (nothing
    written) if it does not parse. Returns the version."""
    tariff = parse_tariff(text, source)
    raw = txn.get(_COUNTER, db=db)
    version: int = (unpack_i64(raw) if raw else 0) + 1
    record = {"version": version, "effective_from": effective_from, "loaded_at": now,
              "source": source, "text": text, "currency": tariff.currency,
              "sha256": hashlib.sha256(text.encode()).hexdigest(),
              "plans": sorted(tariff.plans), "rates": len(tariff.rates)}
    txn.put(_vkey(b"v", version), msgpack.packb(record), db=db)
    txn.put(_vkey(b"e", version), pack_i64(effective_from), db=db)
    txn.put(_COUNTER, pack_i64(version), db=db)
    _bump_changes(txn, db)
    return version


def retire_in(txn: lmdb.Transaction[bytes], db: lmdb._Database, version: int,
              at: int) -> tuple[int, bool]:
    """Retire `version` at `at`: (when it was retired, whether it already was). Raises before
    writing: TariffNotFound, TariffRetireRefused (no version would be in force at `at`)."""
    if txn.get(_vkey(b"v", version), db=db) is None:
        raise TariffNotFound(f"no tariff version {version}")
    old = txn.get(_vkey(b"r", version), db=db)
    if old is not None:
        return unpack_i64(old), True
    left = [(e, v) for e, v in _schedule(txn, db) if v != version]
    if _in_force(left, at) is None:
        raise TariffRetireRefused(
            f"retiring version {version} would leave no tariff version in force now; "
            "load its successor first")
    txn.put(_vkey(b"r", version), pack_i64(at), db=db)
    _bump_changes(txn, db)
    return at, False


def record_in(txn: lmdb.Transaction[bytes], db: lmdb._Database, version: int) -> dict[str, Any]:
    """One version's record, its text included, with retired_at; TariffNotFound if absent."""
    raw = txn.get(_vkey(b"v", version), db=db) if 0 < version < 2**62 else None
    if raw is None:
        raise TariffNotFound(f"no tariff version {version}")
    rec: dict[str, Any] = msgpack.unpackb(raw)  # untyped msgpack; see record()
    retired = txn.get(_vkey(b"r", version), db=db)
    rec["retired_at"] = unpack_i64(retired) if retired else None
    return rec


def records_in(txn: lmdb.Transaction[bytes], db: lmdb._Database) -> list[dict[str, Any]]:
    """Every version's metadata (no text, with retired_at), oldest first."""
    out = []
    cur = txn.cursor(db=db)
    if cur.set_range(b"v"):
        for key, value in cur:
            if not key.startswith(b"v"):
                break
            rec: dict[str, Any] = msgpack.unpackb(value)  # untyped msgpack; see record()
            rec.pop("text", None)
            retired = txn.get(_vkey(b"r", rec["version"]), db=db)
            rec["retired_at"] = unpack_i64(retired) if retired else None
            out.append(rec)
    return out


def version_in_force(txn: lmdb.Transaction[bytes], db: lmdb._Database, instant: int) -> int | None:
    """The version in force at `instant` as stored in this txn (None: none)."""
    return _in_force(_schedule(txn, db), instant)


def _schedule(txn: lmdb.Transaction[bytes], db: lmdb._Database) -> list[tuple[int, int]]:
    """Sorted (effective_from, version) of every version not retired."""
    out = []
    cur = txn.cursor(db=db)
    if cur.set_range(b"e"):
        for key, value in cur:
            if not key.startswith(b"e"):
                break
            if txn.get(b"r" + key[1:], db=db) is None:
                out.append((unpack_i64(value), unpack_i64(key[1:])))
    return sorted(out)


def _in_force(schedule: list[tuple[int, int]], instant: int) -> int | None:
    i = bisect.bisect_right(schedule, (instant, 1 << 62))
    return schedule[i - 1][1] if i else None


def describe(rater: Rater) -> dict[str, Any]:
    """A JSON-able view of a compiled version: plans, settings and rates, money as decimal strings."""
    from balance.money import format_micro

    t = rater.tariff
    plans = {}
    for plan in t.plans.values():
        plans[plan.name] = {
            "timezone": plan.timezone,
            "recurring_fee": format_micro(plan.recurring_fee),
            "tax_rate": format_micro(plan.tax_rate),
            "discounts": [{"threshold": format_micro(d.threshold),
                           "percent": format_micro(d.ppm * 100)} for d in plan.discounts],
            "final_unit_action": ["terminate", "redirect", "restrict_access"][plan.final_unit_action],
            "redirect_address": plan.redirect_address,
            "restriction_filter_rule": plan.restriction_filter_rule,
            "rates": [{
                "rating_group": "*" if r.rating_group == WILDCARD else r.rating_group,
                "unit": r.unit, "price": format_micro(r.price), "increment": r.increment,
                "first_increment": r.first_increment, "connect_fee": format_micro(r.connect_fee),
                "tiers": [{"from": x.start, "price": format_micro(x.price)} for x in r.tiers],
                "bands": [{"name": b.name, "days": list(b.days),
                           "from": f"{b.start_minute // 60:02d}:{b.start_minute % 60:02d}",
                           "to": f"{b.end_minute // 60:02d}:{b.end_minute % 60:02d}",
                           "prices": [format_micro(p) for p in b.prices]} for b in r.bands],
            } for r in plan.rates.values()],
        }
    return {"version": rater.version, "currency": t.currency,
            "effective_from": rater.effective_from, "plans": plans}
