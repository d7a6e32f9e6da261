"""Accounts and tariff for a run, written straight into the data dir with balance's ops.

LMDB is multi-process, so this works whether or not a server has the environment open. Accounts
are created in batched write transactions (one durable commit per batch, not per account) and
only when missing, so a re-run on the same data dir provisions nothing twice.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from bench.workload import account_id

DEFAULT_TARIFF = Path(__file__).with_name("bench-tariff.toml")
BATCH = 2000


def load_tariff_once(store, text: str, source: str) -> int:  # type: ignore[no-untyped-def]
    """Store the tariff as a new version unless the newest version already has this text."""
    from rating.store import TariffStore

    tariffs = TariffStore(store)
    sha = hashlib.sha256(text.encode()).hexdigest()
    versions = tariffs.list()
    if versions and versions[-1].get("sha256") == sha:
        return int(versions[-1]["version"])
    return tariffs.load(text, source, effective_from=0)


def provision(data_dir: str | os.PathLike, *, accounts: int, balance: int, tariff_path: Path,
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

            def create(tx, ids=ids):  # type: ignore[no-untyped-def]
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


def balances(data_dir: str | os.PathLike, accounts: int) -> list[int]:
    """Balance (micro-units, reservations not deducted) of each bench account, in one read txn."""
    from balance.store import open_store

    store = open_store(data_dir)
    try:
        with store.read() as view:
            out = []
            for i in range(accounts):
                acct = view.find_account(account_id(i))
                out.append(acct.balance if acct is not None else 0)
            return out
    finally:
        store.close()
