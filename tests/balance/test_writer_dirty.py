"""The group-commit writer reruns a batch op by op only for a failing op that wrote: an op that
only read (through `read_txn`, the views, a balance op that refused before writing) and then
raised is dropped from its batch, and the other ops commit in the same txn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from balance import ops
from balance.errors import InsufficientFunds
from balance.schema import ACCOUNTS
from balance.store import Store, Tx, open_store
from balance.writer import GroupCommitWriter

A, B = "491700000001", "491700000002"


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    s = open_store(tmp_path / "data", sync=False)
    for acct in (A, B):
        s.execute(lambda tx, acct=acct: ops.create_account(tx, None, account_id=acct,
                                                           currency="EUR", balance=1_000))
    yield s
    s.close()


def balance_of(store: Store, account_id: str) -> int:
    with store.read() as view:
        return view.get_account(account_id).balance


def topup(amount: int):  # type: ignore[no-untyped-def]
    return lambda tx: ops.topup(tx, None, A, amount)


def read_then_raise(tx: Tx) -> None:
    assert tx.read_txn.get(A.encode(), db=tx.dbs[ACCOUNTS]) is not None
    tx.get_account(B)
    tx.reservations(B)
    raise RuntimeError("refused after reading")


def refused_reserve(tx: Tx) -> object:
    """A balance op that reads the account, prices, and refuses before writing anything."""
    return ops.reserve(tx, None, account_id=B, session_id="s", rating_group=1, unit="seconds",
                       units=10**6, price=lambda n: n * 100, afford=lambda m: m // 100,
                       all_or_nothing=True, expires_at=10**10)


def write_then_raise(tx: Tx) -> None:
    ops.topup(tx, None, B, 500)
    raise RuntimeError("refused after writing")


def test_a_failing_reader_is_dropped_without_the_rerun(store: Store) -> None:
    writer = GroupCommitWriter(store)
    outcomes = writer.commit_batch([(topup(1), "t1"), (read_then_raise, "r"),
                                    (refused_reserve, "q"), (topup(2), "t2")])
    assert writer.stats.isolated == 0      # the batch ran once, in one txn
    assert writer.stats.batches == 1
    by = {target: (result, exc) for target, result, exc in outcomes}
    assert by["t1"] == (1_001, None) and by["t2"] == (1_003, None)
    assert isinstance(by["r"][1], RuntimeError)
    assert isinstance(by["q"][1], InsufficientFunds)
    assert balance_of(store, A) == 1_003 and balance_of(store, B) == 1_000


def test_a_failing_writer_gets_the_rerun_and_its_writes_are_undone(store: Store) -> None:
    writer = GroupCommitWriter(store)
    outcomes = writer.commit_batch([(topup(1), "t1"), (write_then_raise, "w"), (topup(2), "t2")])
    assert writer.stats.isolated == 1      # rerun op by op, each in a nested txn
    by = {target: (result, exc) for target, result, exc in outcomes}
    assert by["t1"] == (1_001, None) and by["t2"] == (1_003, None)
    assert isinstance(by["w"][1], RuntimeError)
    assert balance_of(store, A) == 1_003
    assert balance_of(store, B) == 1_000   # the failed op's top-up is not committed


def test_reads_leave_the_op_clean_and_each_write_path_marks_it(store: Store) -> None:
    def probe(tx: Tx) -> list[bool]:
        seen = []
        tx.read_txn.get(A.encode(), db=tx.dbs[ACCOUNTS])
        tx.get(ACCOUNTS, A.encode())
        tx.resolve(A)
        tx.bundles(A)
        list(tx.ledger(A))
        seen.append(tx.dirty)
        for write in (lambda: tx.write_txn, lambda: tx.txn,
                      lambda: tx.put(ACCOUNTS, b"x", b""), lambda: tx.delete(ACCOUNTS, b"x")):
            tx.dirty = False
            write()
            seen.append(tx.dirty)
        tx.dirty = False
        with tx.nested():
            pass
        seen.append(tx.dirty)
        return seen
    assert store.execute(probe) == [False, True, True, True, True, True]
