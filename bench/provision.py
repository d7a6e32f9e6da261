"""Accounts and tariff for a run, written straight into the data dir with balance's ops.

LMDB is multi-process, so this works whether or not a server has the environment open. Accounts
are created in batched write transactions (one durable commit per batch, not per account) and
only when missing, so a re-run on the same data dir provisions nothing twice.

The bench only writes into a data dir of its own, or into the operator's when asked (--provision);
otherwise `missing` says what the run would need and the bench refuses instead of writing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.workload import account_id

if TYPE_CHECKING:
    from balance.store import Store, Tx

DEFAULT_TARIFF = Path(__file__).with_name("bench-tariff.toml")
BATCH = 2000


def in_force(versions: list[dict[str, Any]], now: int | None = None) -> dict[str, Any] | None:
    """The record of the version in force at `now` (TariffStore's rule: latest effective_from, then
    highest version), or None."""
    now = int(time.time()) if now is None else now
    due = [v for v in versions if int(v["effective_from"]) <= now]
    return max(due, key=lambda v: (int(v["effective_from"]), int(v["version"]))) if due else None


def load_tariff_once(store: Store, text: str, source: str) -> int:
    """Store the tariff as a new version unless the version in force already has this text.

    Effective from 0 in a data dir without tariffs (so every instant of the run is covered), from
    now otherwise (effective_from 0 would leave an existing version in force)."""
    from rating.tariff_store import TariffStore

    tariffs = TariffStore(store)
    sha = hashlib.sha256(text.encode()).hexdigest()
    versions = tariffs.list()
    current = in_force(versions)
    if current is not None and current.get("sha256") == sha:
        return int(current["version"])
    return tariffs.load(text, source, effective_from=None if versions else 0)


def account_range(accounts: int) -> str:
    """The bench's account ids, as one line: "491700000000..491700000999"."""
    return f"{account_id(0)}..{account_id(accounts - 1)}"


def missing(data_dir: str | os.PathLike[str], *, accounts: int, tariff_path: Path) -> list[str]:
    """What a run on this data dir needs and does not find there (empty: all there). Reads only:
    never creates the dir, a db or anything else."""
    from balance.store import open_store
    from rating.tariff_store import TariffStore

    path = Path(data_dir)
    if not (path / "data.mdb").is_file():
        return [f"OCS data (no {path / 'data.mdb'})"]
    store = open_store(path, readonly=True)
    try:
        try:
            versions = TariffStore(store).list()
        except KeyError:  # no "tariffs" db yet
            versions = []
        absent = accounts
        if "accounts" in store.dbs:
            with store.read() as view:
                absent = sum(view.find_account(account_id(i)) is None for i in range(accounts))
    finally:
        store.close()
    out = []
    if absent:
        out.append(f"{absent} of the {accounts} bench accounts {account_range(accounts)}")
    sha = hashlib.sha256(tariff_path.read_text().encode()).hexdigest()
    current = in_force(versions)
    if current is None:
        out.append(f"a tariff (the bench's is {tariff_path})")
    elif current.get("sha256") != sha:
        out.append(f"the bench tariff {tariff_path} in force (in force: version "
                   f"{current['version']} from {current.get('source', '?')})")
    return out


def provision(data_dir: str | os.PathLike[str], *, accounts: int, balance: int, tariff_path: Path,
              plan: str = "default", postpaid_every: int = 0,
              progress: Callable[[int, int], None] | None = None) -> int:
    """Create the bench accounts (ids from workload.account_id) and load the tariff.

    With postpaid_every = k, every k-th account is on plan "postpaid" with a zero balance and a
    credit limit of `balance` instead. Returns the tariff version. Existing accounts are left as
    they are.
    """
    from balance.ops import create_account
    from balance.store import open_store
    from rating.tariff import load_tariff

    currency = load_tariff(tariff_path).currency
    store = open_store(data_dir)
    try:
        version = load_tariff_once(store, tariff_path.read_text(), str(tariff_path))
        for lo in range(0, accounts, BATCH):
            ids = [account_id(i) for i in range(lo, min(accounts, lo + BATCH))]

            def create(tx: Tx, ids: list[str] = ids) -> int:
                made = 0
                for ident in ids:
                    if tx.find_account(ident) is None:
                        post = postpaid_every and (int(ident[4:]) + 1) % postpaid_every == 0
                        create_account(tx, f"bench-create:{ident}", account_id=ident,
                                       currency=currency, balance=0 if post else balance,
                                       credit_limit=balance if post else 0,
                                       plan="postpaid" if post else plan)
                        made += 1
                return made

            store.execute(create)
            if progress is not None:
                progress(min(accounts, lo + BATCH), accounts)
        return version
    finally:
        store.close()


def balances(data_dir: str | os.PathLike[str], accounts: int) -> list[int]:
    """Balance (micro-units, reservations not deducted) of each bench account, in one read txn."""
    from balance.store import open_store

    store = open_store(data_dir, readonly=True)
    try:
        with store.read() as view:
            out = []
            for i in range(accounts):
                acct = view.find_account(account_id(i))
                out.append(acct.balance if acct is not None else 0)
            return out
    finally:
        store.close()
