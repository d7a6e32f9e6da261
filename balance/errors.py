"""Typed balance errors, each with a one-line message the server maps to a result code and the CLI prints."""

from __future__ import annotations


class BalanceError(Exception):
    """Base: the operation was refused and changed nothing."""


class UnknownAccount(BalanceError):
    def __init__(self, account_id: str) -> None:
        super().__init__(f"unknown account {account_id!r}")
        self.account_id = account_id


class DuplicateAccount(BalanceError):
    def __init__(self, ident: str) -> None:
        super().__init__(f"account or alias {ident!r} already exists")
        self.ident = ident


class CurrencyMismatch(BalanceError):
    def __init__(self, account_id: str, have: str, got: str) -> None:
        super().__init__(f"account {account_id!r} is in {have}, not {got}")


class InsufficientFunds(BalanceError):
    def __init__(self, account_id: str, needed: int, available: int) -> None:
        super().__init__(f"account {account_id!r}: needs {needed} micro-units, {available} available")
        self.needed = needed
        self.available = available


class AccountNotActive(BalanceError):
    def __init__(self, account_id: str, status: str) -> None:
        super().__init__(f"account {account_id!r} is {status}")
        self.status = status


class AccountBusy(BalanceError):
    """Closing an account that still holds reservations."""


class IdempotencyConflict(BalanceError):
    """The key was first used by a different operation."""


class InvalidArgument(BalanceError):
    """A malformed id, unit, amount or status."""


class StoreFullError(BalanceError):
    """The map cannot grow further (max_map_size reached or the disk refused)."""


# What a full or failing disk looks like from LMDB and the OS. py-lmdb reports a failed write
# (ENOSPC, EIO) at commit as a bare lmdb.Error whose message carries strerror, so the text is what
# tells it apart from a bug.
_WRITE_ERRNOS = frozenset({28, 5, 122, 30})  # ENOSPC, EIO, EDQUOT, EROFS
_WRITE_TEXTS = ("No space left", "Input/output error", "Disk quota", "Read-only file system",
                "MDB_MAP_FULL", "Map full")


def is_write_failure(exc: BaseException) -> bool:
    """True when `exc` says the store cannot write now (disk full, I/O error, map full): a state
    that ends by itself when space comes back, not a fault of the request that met it."""
    if isinstance(exc, StoreFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return True
    name = type(exc).__module__
    if name == "lmdb" or name.startswith("lmdb."):
        if type(exc).__name__ in ("MapFullError", "DiskError"):
            return True
        text = str(exc)
        return any(t in text for t in _WRITE_TEXTS)
    return False
