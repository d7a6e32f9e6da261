"""Queries over one transaction (read or write): the helpers the CLI, the server and ops share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from balance.errors import UnknownAccount
from balance.records import (
    Account,
    Bundle,
    LedgerEntry,
    Reservation,
    be8,
    child_key,
    reservation_key,
)
from balance.schema import ACCOUNTS, ALIASES, BUNDLES, LEDGER, RESERVATIONS, RESV_ACCOUNT

if TYPE_CHECKING:
    import lmdb


class HasDbs(Protocol):
    """What a View needs of its store (balance.store.Store): the named LMDB databases. Typed by
    shape so this module does not import the store module, which builds its Tx on View."""

    dbs: dict[str, Any]


class View:
    """One transaction's queries. `read_txn` is the raw lmdb txn for reads: a plain attribute,
    not a property, so reading through it costs no Python call (balance.store.Tx relies on it
    for reads that must not mark the op as written)."""

    __slots__ = ("_t", "dbs", "read_txn", "store")

    def __init__(self, txn: lmdb.Transaction[bytes], store: HasDbs) -> None:
        self._t = txn  # this module's and balance.store's own handle
        self.read_txn = txn
        self.store = store
        self.dbs: dict[str, Any] = store.dbs

    @property
    def txn(self) -> lmdb.Transaction[bytes]:
        return self._t

    def get(self, dbname: str, key: bytes) -> bytes | None:
        return self._t.get(key, db=self.dbs[dbname])

    def resolve(self, ident: str) -> str | None:
        """Account id for an account id or any alias (IMSI, ...); None when unknown."""
        key = ident.encode()
        if self._t.get(key, db=self.dbs[ACCOUNTS]) is not None:
            return ident
        target = self._t.get(key, db=self.dbs[ALIASES])
        return None if target is None else target.decode()

    def find_account(self, account_id: str) -> Account | None:
        raw = self._t.get(account_id.encode(), db=self.dbs[ACCOUNTS])
        return None if raw is None else Account.unpack(account_id, raw)

    def get_account(self, account_id: str) -> Account:
        raw = self._t.get(account_id.encode(), db=self.dbs[ACCOUNTS])
        if raw is None:
            raise UnknownAccount(account_id)
        return Account.unpack(account_id, raw)

    def accounts(self) -> Iterator[Account]:
        for key, raw in self._t.cursor(db=self.dbs[ACCOUNTS]):
            yield Account.unpack(key.decode(), raw)

    def _prefixed(self, dbname: str, account_id: str) -> Iterator[tuple[bytes, bytes]]:
        prefix = child_key(account_id, b"")
        cur = self._t.cursor(db=self.dbs[dbname])
        if not cur.set_range(prefix):
            return
        for key, raw in cur:
            if not key.startswith(prefix):
                return
            yield key, raw

    def bundles(self, account_id: str) -> list[Bundle]:
        """The account's live bundles in draw order."""
        found = [Bundle.unpack(k, v) for k, v in self._prefixed(BUNDLES, account_id)]
        found.sort(key=Bundle.order)
        return found

    def reservations(self, account_id: str) -> list[Reservation]:
        out = []
        db = self.dbs[RESERVATIONS]
        plen = len(account_id.encode()) + 1
        for key, _ in self._prefixed(RESV_ACCOUNT, account_id):
            rkey = key[plen:]
            raw = self._t.get(rkey, db=db)
            if raw is not None:
                out.append(Reservation.unpack(rkey, raw))
        return out

    def get_reservation(self, session_id: str, rating_group: int | None) -> Reservation | None:
        key = reservation_key(session_id, rating_group)
        raw = self._t.get(key, db=self.dbs[RESERVATIONS])
        return None if raw is None else Reservation.unpack(key, raw)

    def ledger(self, account_id: str, after_seq: int = 0) -> Iterator[LedgerEntry]:
        """Journal entries of the account in order, from sequence after_seq + 1 (walks the
        account's chain back from its tail, then yields oldest first)."""
        pos = self.get_account(account_id).ledger_tail
        db = self.dbs[LEDGER]
        found = []
        while pos:
            key = be8(pos)
            # ledger entries are never deleted: every position on an account's chain is present
            e = LedgerEntry.unpack(key, cast(bytes, self._t.get(key, db=db)))
            if e.seq <= after_seq:
                break
            found.append(e)
            pos = e.prev
        yield from reversed(found)

    def journal_end(self) -> int:
        """Position of the last journal entry (0: none yet)."""
        cur = self._t.cursor(db=self.dbs[LEDGER])
        return int.from_bytes(cur.key(), "big") if cur.last() else 0

    def journal(self, after: int = 0) -> Iterator[LedgerEntry]:
        """Every account's entries in commit order, from position after + 1."""
        cur = self._t.cursor(db=self.dbs[LEDGER])
        if not cur.set_range(be8(after + 1)):
            return
        for key, raw in cur:
            yield LedgerEntry.unpack(key, raw)
