"""The engine's journal (balance.journal): exact replay, positions never reused, corruption found,
and no acknowledged record lost by a kill -9 at any instant of an append."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balance.journal import RECORDS, Journal, JournalCorrupt, JournalFull


def payload(pos: int) -> bytes:
    """What the writer of the crash test appends at `pos` (the checker derives it again)."""
    return hashlib.sha256(pos.to_bytes(8, "big")).digest() * (1 + pos % 7)


def test_records_come_back_in_order_and_positions_continue(tmp_path: Path) -> None:
    with Journal(tmp_path / "j") as j:
        assert j.append([b"a", b"b"]) == 2
        assert j.append([]) == 2
        assert j.append([b"c"]) == 3
        assert list(j.read()) == [(1, b"a"), (2, b"b"), (3, b"c")]
        assert list(j.read(2)) == [(3, b"c")]
        assert j.truncate_through(3) == 3
        assert list(j.read(3)) == []
    with Journal(tmp_path / "j") as j:  # empty after truncation, yet it goes on from 4
        assert j.last == 3 and j.append([b"d"]) == 4
        assert list(j.read(3)) == [(4, b"d")]
        with pytest.raises(JournalCorrupt, match="truncated through 3"):
            list(j.read(1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("append"), st.lists(st.binary(max_size=300), max_size=5)),
    st.tuples(st.just("truncate"), st.integers(0, 40)),
    st.tuples(st.just("reopen"), st.none())), max_size=25))
def test_the_journal_matches_a_list_model(tmp_path_factory: pytest.TempPathFactory,
                                          ops: list[tuple[str, object]]) -> None:
    path = tmp_path_factory.mktemp("model") / "j"
    model: dict[int, bytes] = {}
    last = low = 0
    j = Journal(path)
    try:
        for op, arg in ops:
            if op == "append":
                assert isinstance(arg, list)
                for p in arg:
                    last += 1
                    model[last] = p
                assert j.append(arg) == last
            elif op == "truncate":
                assert isinstance(arg, int)
                upto = min(arg, last)
                j.truncate_through(arg)
                for k in [k for k in model if k <= upto]:
                    del model[k]
                low = max(low, upto)
            else:
                j.close()
                j = Journal(path)
            assert j.last == last
            assert dict(j.read(low)) == model
    finally:
        j.close()


def _poke(path: Path, pos: int, value: bytes | None) -> None:
    """Write (or delete) a record behind the journal's back, as a disk fault or a bad copy would."""
    env = lmdb.open(str(path), max_dbs=2)
    db = env.open_db(RECORDS)
    with env.begin(write=True) as txn:
        if value is None:
            txn.delete(pos.to_bytes(8, "big"), db=db)
        else:
            txn.put(pos.to_bytes(8, "big"), value, db=db)
    env.close()


def test_a_flipped_bit_stops_the_replay_at_that_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path) as j:
        j.append([b"one", b"two", b"three", b"four"])
    _poke(path, 3, b"\0\0\0\0three")  # a CRC that does not match its payload
    with Journal(path) as j:
        got = []
        with pytest.raises(JournalCorrupt) as e:
            got.extend(j.read())
        assert e.value.position == 3 and got == [(1, b"one"), (2, b"two")]
        assert j.cut_from(3) == 2 and j.last == 2
        assert list(j.read()) == [(1, b"one"), (2, b"two")]
        assert j.append([b"three again"]) == 3


def test_a_gap_in_the_positions_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path) as j:
        j.append([b"1", b"2", b"3"])
    _poke(path, 2, None)
    with Journal(path) as j, pytest.raises(JournalCorrupt, match="record 2: missing"):
        list(j.read())


def test_the_map_grows_and_refuses_past_its_cap(tmp_path: Path) -> None:
    with Journal(tmp_path / "j", max_map_size=256 << 20) as j:
        big = os.urandom(1 << 20)
        for _ in range(80):  # 80 MiB > the 64 MiB start
            j.append([big])
        assert j.env.info()["map_size"] > 64 << 20
        assert sum(1 for _ in j.read()) == 80
    with Journal(tmp_path / "k", max_map_size=64 << 20) as j:
        with pytest.raises(JournalFull):
            for _ in range(80):
                j.append([big])
        assert list(j.read())[-1][0] == j.last  # what was acknowledged is there


WRITER = """
import sys
sys.path.insert(0, {root!r})
import hashlib
import random
from balance.journal import Journal

def payload(pos):  # as payload() in the test
    return hashlib.sha256(pos.to_bytes(8, "big")).digest() * (1 + pos % 7)

j = Journal(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
pos = j.last
out = sys.stdout
while True:
    n = rng.randint(1, 64)
    j.append([payload(p) for p in range(pos + 1, pos + n + 1)])
    pos += n
    out.write(f"{{pos}}\\n")
    out.flush()
"""


@pytest.mark.slow
def test_kill_9_mid_append_loses_no_acknowledged_record(tmp_path: Path) -> None:
    """A writer appends batches and prints each last position once append() returned; it is killed
    with SIGKILL at random instants, 12 times over one journal. After each kill every printed
    position is there with its payload, every record passes its CRC, positions have no gap."""
    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=root))
    path = tmp_path / "j"
    rng = random.Random(1204)
    acked = 0
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(round_)],
                                stdout=subprocess.PIPE, text=True, cwd=root)
        time.sleep(rng.uniform(0.2, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        lines = [int(x) for x in out.split()]
        if lines:
            acked = lines[-1]
        with Journal(path) as j:
            got = list(j.read())
            assert [p for p, _ in got] == list(range(1, j.last + 1))
            assert j.last >= acked, f"round {round_}: acknowledged {acked}, journal ends at {j.last}"
            assert all(v == payload(p) for p, v in got)
    assert acked > 100
