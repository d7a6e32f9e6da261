"""The LMDB environment: opening it (once per process), write and read transactions, map growth.

LMDB forbids opening one environment twice in a process, so `open_store` shares one handle per path
(reference counted). Growing the map (MapFullError) or adopting a size grown by another process
(MapResizedError) needs no transaction open in this process: every txn holds a shared guard and a
resize takes it exclusively.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import lmdb

from balance import migrate
from balance.errors import StoreFullError
from balance.records import be8
from balance.schema import ALL_DBS, LEDGER
from balance.views import View

T = TypeVar("T")

MAX_MAP_SIZE = 1 << 40   # growth stops here with StoreFullError
MAX_RETRIES = 40         # map growths / resize adoptions per transaction


class _Guard:
    """Shared (txn) / exclusive (resize) lock, re-entrant for shared holders on one thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._resizing = False

    def acquire(self) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing or self._active:
                self._cond.wait()
            self._resizing = True
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


@dataclass(slots=True)
class _Shared:
    env: lmdb.Environment
    dbs: dict[str, Any]
    sync: bool
    readonly: bool
    guard: _Guard
    refs: int = 1
    max_map_size: int = MAX_MAP_SIZE
    ledger_txn: Any = None    # the write txn ledger_next belongs to (see Tx.append_ledger)
    ledger_next: int = 0


_OPEN: dict[str, _Shared] = {}
_OPEN_LOCK = threading.Lock()


class Tx(View):
    """A write transaction handed to ops: the lmdb txn, the store, and one clock reading.

    `dirty` says the op may have written. Reads go through `read_txn` (inherited, a plain
    attribute) and never set it; every write path does: put, delete, append_ledger, nested, and
    `write_txn`, the raw txn for code that writes through lmdb itself (`txn` is the same handle,
    for callers that may write: billing's cdr.write, rating.tariff_store). A failing op that is
    not dirty is dropped from its batch at no cost; a dirty one makes the writer redo the batch
    with a nested txn per op. Marking happens when a write path is taken, not per lmdb call: a
    wrapper tracking each get/put was measured and rejected (one more Python call per access).
    """

    __slots__ = ("dirty", "now")
    store: Store  # View types it by shape only (balance.views does not import this module)

    def __init__(self, txn: lmdb.Transaction[bytes], store: Store, now: int) -> None:
        View.__init__(self, txn, store)
        self.now = now
        self.dirty = False

    @property
    def write_txn(self) -> lmdb.Transaction[bytes]:
        """The raw txn, to write through: marks the op dirty."""
        self.dirty = True
        return self._t

    @property
    def txn(self) -> lmdb.Transaction[bytes]:
        """write_txn under View's name, for code given a Tx that may write through it."""
        self.dirty = True
        return self._t

    def put(self, dbname: str, key: bytes, value: bytes) -> None:
        self.dirty = True
        self._t.put(key, value, db=self.dbs[dbname])

    def delete(self, dbname: str, key: bytes) -> bool:
        self.dirty = True
        return self._t.delete(key, db=self.dbs[dbname])

    @contextmanager
    def nested(self) -> Iterator[Tx]:
        """A child transaction: its writes stay only if the block ends without an exception."""
        self.dirty = True
        child = self.store.env.begin(write=True, parent=self._t)
        try:
            yield Tx(child, self.store, self.now)
        except BaseException:
            child.abort()
            raise
        child.commit()

    def append_ledger(self, value: bytes) -> int:
        """Put value at the ledger's next position; return it. The next position is remembered
        per write txn (a cursor seek per entry costs more than the put); a stale guess, after a
        nested txn or another process's commit, is caught by append=True refusing it."""
        self.dirty = True
        t, shared, db = self._t, self.store._shared, self.dbs[LEDGER]
        pos = shared.ledger_next if shared.ledger_txn is t else 0
        if not pos or not t.put(be8(pos), value, db=db, append=True):
            pos = append_at_tail(t, db, value)
        shared.ledger_txn, shared.ledger_next = t, pos + 1
        return pos


def append_at_tail(txn: lmdb.Transaction[bytes], db: Any, value: bytes) -> int:
    """Put value at the next be8 position of an append-only db (1 when empty); return it.
    The ledger, the audit trail and the webhook outbox are such dbs."""
    cur = txn.cursor(db=db)
    pos = int.from_bytes(cur.key(), "big") + 1 if cur.last() else 1
    if not txn.put(be8(pos), value, db=db, append=True):
        raise RuntimeError("append refused at the db's own tail")
    return pos


class ReadView(View):
    """A read transaction with the query helpers; never blocks writers."""

    __slots__ = ()


class Store:
    """One LMDB environment holding balances and the other components' records."""

    def __init__(self, path: str, shared: _Shared) -> None:
        self.path = path
        self._shared = shared
        self.env: lmdb.Environment = shared.env
        self.dbs: dict[str, Any] = shared.dbs
        self.sync = shared.sync
        self._closed = False

    def db(self, name: str) -> Any:
        return self.dbs[name]

    # -- transactions -------------------------------------------------------------------------
    def begin_write(self) -> lmdb.Transaction[bytes]:
        """Begin a write txn holding the shared guard (release with `end`); adopts foreign resizes."""
        for _ in range(MAX_RETRIES):
            self._shared.guard.acquire()
            try:
                return self.env.begin(write=True)
            except lmdb.MapResizedError:
                self._shared.guard.release()
                self.adopt_map_size()
            except BaseException:
                self._shared.guard.release()
                raise
        raise StoreFullError(f"{self.path}: map size keeps changing under us")

    def sync_meta(self) -> None:
        """Make every commit so far durable (fdatasync; flushes the meta pages commits left)."""
        if not self.sync:
            return
        self._shared.guard.acquire()
        try:
            self.env.sync(True)
        finally:
            self._shared.guard.release()

    def end(self, txn: lmdb.Transaction, commit: bool) -> None:
        try:
            if commit:
                txn.commit()
            else:
                txn.abort()
        finally:
            self._shared.guard.release()

    def execute(self, fn: Callable[[Tx], T]) -> T:
        """Run fn in one durable write txn; grow the map and rerun it when it is full."""
        for _ in range(MAX_RETRIES):
            txn = self.begin_write()
            done = False
            try:
                result = fn(Tx(txn, self, int(time.time())))
                done = True
            except lmdb.MapFullError:
                self.end(txn, False)
                self.grow()
                continue
            except BaseException:
                self.end(txn, False)
                raise
            if done:
                try:
                    self.end(txn, True)
                except lmdb.MapFullError:
                    self.grow()
                    continue
                self.sync_meta()
                return result
        raise StoreFullError(f"{self.path}: transaction does not fit after {MAX_RETRIES} growths")

    @contextmanager
    def read(self) -> Iterator[ReadView]:
        guard = self._shared.guard
        for _ in range(MAX_RETRIES):
            guard.acquire()
            try:
                txn = self.env.begin(write=False)
                break
            except lmdb.MapResizedError:
                guard.release()
                self.adopt_map_size()
            except BaseException:
                guard.release()
                raise
        else:
            raise StoreFullError(f"{self.path}: map size keeps changing under us")
        try:
            yield ReadView(txn, self)
        finally:
            try:
                txn.abort()
            finally:
                guard.release()

    # -- map size -----------------------------------------------------------------------------
    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def grow(self) -> None:
        """Double the map (call with no txn open in this thread); StoreFullError past the cap."""
        with self._shared.guard.exclusive():
            current = self.env.info()["map_size"]
            if current >= self._shared.max_map_size:
                raise StoreFullError(f"{self.path}: store full at {current} bytes (max_map_size)")
            new = min(current * 2, self._shared.max_map_size)
            try:
                self.env.set_mapsize(new)
            except lmdb.Error as exc:
                raise StoreFullError(f"{self.path}: cannot grow map to {new} bytes: {exc}") from None

    def adopt_map_size(self) -> None:
        """Another process grew the map: take its size (LMDB's set_mapsize(0))."""
        with self._shared.guard.exclusive():
            self.env.set_mapsize(0)

    def set_max_map_size(self, limit: int) -> None:
        self._shared.max_map_size = limit

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _OPEN_LOCK:
            self._shared.refs -= 1
            if self._shared.refs == 0:
                _OPEN.pop(self.path, None)
                self._shared.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store_capped(path: str | os.PathLike[str], *, sync: bool = True, max_map_size: int = 0) -> Store:
    """open_store for a server process: the map may grow to `max_map_size` bytes (0: MAX_MAP_SIZE)
    and starts no larger, so every process of one server holds the same cap."""
    cap = max_map_size or MAX_MAP_SIZE
    store = open_store(path, sync=sync, map_size=min(256 << 20, cap))
    store.set_max_map_size(cap)
    return store


def open_store(path: str | os.PathLike[str], *, sync: bool = True, map_size: int = 256 << 20,
               readonly: bool = False) -> Store:
    """Open (creating the dir and all named dbs) the environment at path; shared within a process.
    An environment of an older format is migrated (writable) or refused (read-only), one of a newer
    format refused (balance.migrate)."""
    real = os.path.realpath(os.fspath(path))
    with _OPEN_LOCK:
        shared = _OPEN.get(real)
        if shared is not None:
            if shared.sync != sync or (shared.readonly and not readonly):
                raise ValueError(f"{real} is already open in this process with other options")
            shared.refs += 1
            return Store(real, shared)
        if not readonly:
            os.makedirs(real, exist_ok=True)
        elif not os.path.exists(os.path.join(real, "data.mdb")):
            raise FileNotFoundError(f"no OCS data at {real}")
        # metasync=False (MDB_NOMETASYNC): a commit fdatasyncs its data pages but leaves the meta
        # page to the next sync, so a power cut can at worst undo the last commit, never corrupt
        # (ACI kept). Durability of a commit is completed by `sync_meta()`: execute() calls it
        # at once; the group-commit writer calls it from its syncer thread while the next batch runs.
        env = lmdb.open(real, map_size=map_size, max_dbs=len(ALL_DBS) + 8, sync=sync,
                        metasync=False, readonly=readonly, max_readers=256, lock=True)
        dbs: dict[str, Any] = {}
        shared = _Shared(env, dbs, sync, readonly, _Guard())
        try:
            for name in ALL_DBS:
                try:
                    dbs[name] = env.open_db(name.encode(), create=not readonly)
                except lmdb.NotFoundError:
                    if not readonly:
                        raise
            with env.begin() as txn:
                version = migrate.stored_version(txn, dbs)
            if migrate.check(real, version, readonly):
                # execute: the rewrite may outgrow the map; the txn is redone after growing it
                Store(real, shared).execute(lambda tx: migrate.migrate(real, tx.write_txn, dbs))
        except BaseException:
            env.close()
            raise
        _OPEN[real] = shared
        return Store(real, shared)

