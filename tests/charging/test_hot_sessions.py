"""The sessions table (ocs.charging.hot.sessions) against ocs.charging.sessions, the model.

Session records put into the table come back equal (groups 0..5, kept answers, seen_above, None
service identifiers, every state); a table loaded from a store the engine's real traffic built
equals the store's records; a checkpoint after changes leaves the SESSIONS and session_due dbs
byte for byte as sessions.save / sessions.purge of the same changes do; deletes free rows for
reuse; growth and churn keep every record with bounded pools.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit
from server_harness import TARIFF

from balance import ops
from balance.errors import InvalidArgument
from balance.money import to_micro
from balance.schema import SESSION_DUE, SESSIONS
from balance.store import Store, Tx, open_store
from ocs.charging import sessions as S
from ocs.charging.hot import sessions as H
from ocs.charging.inprocess import InProcessEngine
from protocol import constants as C
from protocol.records import CCR, MSCCRequest, Units

INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
SID = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
NAME = st.one_of(st.sampled_from(["EUR", "default", "gw.test", "time", "bytes"]), TEXT)


@st.composite
def groups(draw: Any) -> S.RatingGroupState:
    return S.RatingGroupState(
        draw(NAME), *(draw(INT64) for _ in range(7)),
        draw(st.one_of(st.none(), st.integers(0, 2**32 - 1))), draw(st.booleans()),
        draw(st.booleans()), draw(INT64), draw(st.booleans()))


@st.composite
def session(draw: Any, sid: str) -> S.Session:
    s = S.Session(sid, draw(TEXT), draw(TEXT), draw(NAME), draw(NAME), draw(INT64), draw(NAME),
                  draw(INT64), draw(INT64), draw(st.integers(0, 2**40)),
                  draw(st.sampled_from([S.OPEN, S.CLOSED, S.REFUSED])), draw(INT64),
                  draw(st.integers(-1, 2**40)), filed_state=draw(st.sampled_from([S.OPEN, S.CLOSED,
                                                                                  S.REFUSED])))
    s.seen_above = draw(st.lists(INT64, max_size=S.SEEN_ABOVE_MAX))
    for _ in range(draw(st.integers(0, 6))):  # within the bounds, as remember_answer keeps them
        S.remember_answer(s, draw(INT64), draw(NAME), draw(INT64), draw(st.binary(max_size=700)))
    s.groups = draw(st.dictionaries(st.integers(0, 2**32 - 1), groups(), max_size=5))
    return s


@st.composite
def session_sets(draw: Any, max_sessions: int = 10) -> list[S.Session]:
    sids = draw(st.lists(SID, max_size=max_sessions, unique_by=str.encode))
    return [draw(session(sid)) for sid in sids if len(sid.encode()) <= 511]


def table_records(t: H.SessionsTable) -> dict[str, S.Session]:
    return {s.session_id: s for s in (H.record(t, int(r)) for r in t.live_rows())}


def stored(store: Store) -> tuple[dict[bytes, bytes], list[bytes]]:
    """The raw SESSIONS db and the session_due keys."""
    with store.read() as v:
        return (dict(v.read_txn.cursor(db=v.dbs[SESSIONS]).iternext()),
                list(v.read_txn.cursor(db=v.dbs[SESSION_DUE]).iternext(values=False)))


def loaded(store: Store) -> H.SessionsTable:
    with store.read() as v:
        return H.load(v)


def assert_table_is_store(t: H.SessionsTable, store: Store) -> None:
    raw, _ = stored(store)
    recs = table_records(t)
    assert {sid.encode(): s.pack() for sid, s in recs.items()} == raw
    assert recs == {k.decode(): S.Session.unpack(k.decode(), v) for k, v in raw.items()}
    assert dict(t.ids.items()) == {sid.encode(): t.row_of(sid) for sid in recs}


def saved(store: Store, recs: list[S.Session], force: bool = True) -> None:
    """The sessions written by sessions.save, into emptied dbs."""
    def fn(tx: Tx) -> None:
        for name in (SESSIONS, SESSION_DUE):
            tx.write_txn.drop(tx.dbs[name], delete=False)
        for s in recs:
            S.save(tx.write_txn, tx.dbs, s, force=force)
    store.execute(fn)


def copy_sessions(src: Store, dst: Store) -> None:
    raw, due = stored(src)

    def fn(tx: Tx) -> None:
        for k, v in raw.items():
            tx.put(SESSIONS, k, v)
        for k in due:
            tx.put(SESSION_DUE, k, b"")
    dst.execute(fn)


class Counting:
    """A txn factory over store.execute that counts txns and each db's puts and deletes."""

    def __init__(self, store: Store, fail_at: int = 0) -> None:
        self.store, self.fail_at = store, fail_at
        self.names = {id(h): n for n, h in store.dbs.items()}
        self.counts: Counter[str] = Counter()

    def __call__(self, fn: Any) -> None:
        self.counts["txns"] += 1
        if self.counts["txns"] == self.fail_at:
            raise OSError("disk gone")
        self.store.execute(lambda tx: fn(_CountingTx(tx, self)))


class _CountingTx:
    def __init__(self, tx: Any, c: Counting) -> None:
        self.dbs, self.write_txn = tx.dbs, _CountingTxn(tx.write_txn, c)


class _CountingTxn:
    def __init__(self, txn: Any, c: Counting) -> None:
        self.txn, self.c = txn, c

    def put(self, key: bytes, value: bytes, db: Any) -> bool:
        self.c.counts["put " + self.c.names[id(db)]] += 1
        return bool(self.txn.put(key, value, db=db))

    def delete(self, key: bytes, db: Any) -> bool:
        self.c.counts["delete " + self.c.names[id(db)]] += 1
        return bool(self.txn.delete(key, db=db))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "data", sync=False)
    yield s
    s.close()


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "twin", sync=False)
    yield s
    s.close()


# -- round trips --------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session_sets(), st.integers(1, 8), st.data())
def test_records_round_trip_through_the_table(recs: list[S.Session], capacity: int,
                                              data: Any) -> None:
    t = H.empty(capacity)
    for s in recs:
        H.put_record(t, s)
    assert len(t) == len(recs)
    for s in recs:
        row = t.row_of(s.session_id)
        assert row is not None
        assert H.record(t, row) == s and H.record(t, row).pack() == s.pack()
    assert H.records(t, [t.row_of(s.session_id) or 0 for s in recs]) == recs
    assert sorted(t.dirty_list().tolist()) == list(range(len(recs)))
    # updates (each session replaced by another drawn one), deletes, re-puts
    changed = [data.draw(session(s.session_id)) for s in recs]
    gone = {s.session_id for s in recs if data.draw(st.booleans())}
    for s in changed:
        H.put_record(t, s)
    for sid in gone:
        assert H.delete(t, sid) and not H.delete(t, sid)
    want = {s.session_id: s for s in changed if s.session_id not in gone}
    assert table_records(t) == want
    assert {sid: s.pack() for sid, s in table_records(t).items()} == \
        {sid: s.pack() for sid, s in want.items()}
    for s in recs:
        if s.session_id in gone:
            H.put_record(t, s)
            want[s.session_id] = s
    assert table_records(t) == want
    assert t.rows == len(recs)  # freed rows were taken again


_STORE_DIR = tempfile.TemporaryDirectory()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session_sets(max_sessions=15))
def test_a_store_loads_as_its_records(recs: list[S.Session]) -> None:
    with open_store(_STORE_DIR.name, sync=False) as s:  # one store, emptied for each example
        saved(s, recs)  # forced: a drawn record's due was never filed in this store
        t = loaded(s)
        assert_table_is_store(t, s)
        assert t.dirty_list().tolist() == [] and t.due_repairs == {} and t.gone == {}
        assert H.checkpoint(t, s.execute) == 0


# -- a store built by real traffic --------------------------------------------------------------

T0 = 1_760_000_000
INITIAL, UPDATE, TERMINATION = (int(C.CCRequestType.INITIAL_REQUEST),
                                int(C.CCRequestType.UPDATE_REQUEST),
                                int(C.CCRequestType.TERMINATION_REQUEST))


def ccr(sid: str, rtype: int, number: int, who: str, mscc: list[MSCCRequest]) -> CCR:
    return CCR(session_id=sid, origin_host="gw.test", origin_realm="test", destination_realm="test",
               auth_application_id=4, service_context_id="32251@3gpp.org", request_type=rtype,
               request_number=number, subscription_ids=[(C.SubscriptionIdType.END_USER_E164, who)],
               mscc=mscc, hop_by_hop=100 + number, end_to_end=200 + number)


def usage(rgs: list[int], requested: int | None, used: int | None = None) -> list[MSCCRequest]:
    return [MSCCRequest(rating_group=rg, requested=None if requested is None else Units(time=requested),
                        used=[] if used is None else [Units(time=used)]) for rg in rgs]


def traffic(path: Path) -> None:
    """CCR-I/U/T over a few accounts: open, updated, closed (one group or two) and refused sessions."""
    with InProcessEngine(path, TARIFF) as eng:
        def provision(tx: Tx) -> None:
            for who, amount in {"4901": "10", "4902": "5", "4903": "0", "4904": "1"}.items():
                ops.create_account(tx, None, account_id=who, currency="EUR", balance=to_micro(amount))
        eng.store.execute(provision)
        for i in range(12):
            who, sid, rgs = f"490{1 + i % 4}", f"gw.test;{i};sess", [100] if i % 3 else [100, 200]
            at = i * 7
            eng.answer(ccr(sid, INITIAL, 0, who, usage(rgs, 60)), now=T0 + at)
            for n in range(1, 1 + i % 4):
                eng.answer(ccr(sid, UPDATE, n, who, usage(rgs, 60, used=30)), now=T0 + at + 30 * n)
            if i % 2:
                eng.answer(ccr(sid, TERMINATION, 1 + i % 4, who, usage(rgs, None, used=10)),
                           now=T0 + at + 200)


@pytest.fixture(scope="module")
def traffic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traffic") / "data"
    traffic(path)
    return path


def test_a_store_built_by_real_traffic_loads_as_its_records(traffic_dir: Path, store: Store) -> None:
    with open_store(traffic_dir, sync=False) as src:
        copy_sessions(src, store)
    t = loaded(store)
    raw, due = stored(store)
    assert len(t) == len(raw) == 12
    states = Counter(s.state for s in table_records(t).values())
    assert states[S.OPEN] and states[S.CLOSED] and states[S.REFUSED]  # 4903 has nothing
    assert {len(s.groups) for s in table_records(t).values()} >= {1, 2}
    assert all(s.answers for s in table_records(t).values())
    assert_table_is_store(t, store)
    assert t.due_repairs == {} and len(due) == len(raw)


def test_checkpoint_leaves_the_dbs_as_sessions_save_does(traffic_dir: Path, store: Store,
                                                          twin: Store) -> None:
    """The same changes through sessions.save / purge (twin) and through the table (store)."""
    with open_store(traffic_dir, sync=False) as src:
        copy_sessions(src, store)
        copy_sessions(src, twin)
    t = loaded(store)
    recs = sorted(table_records(t).values(), key=lambda s: s.session_id)
    changes: list[tuple[str, S.Session]] = []
    for k, s in enumerate(recs):
        if k % 4 == 0:  # activity: seen moves by less or more than DUE_STEP
            s.seen += 3 if k % 8 else 25
            s.mark_seen(s.last_number + 1)
            S.remember_answer(s, s.last_number, "gw.other", 9000 + k, bytes(range(k, 200)))
            for g in s.groups.values():
                g.total_units += 30
                g.amount += 1_000
            changes.append(("save", s))
        elif k % 4 == 1 and s.state == S.OPEN:  # closed
            s.state, s.closed_at = S.CLOSED, s.seen + 5
            for g in s.groups.values():
                g.closed, g.reserved = True, False
            changes.append(("save", s))
        elif k % 4 == 2:
            changes.append(("purge", s))
    fresh = S.Session("brand-new", "4901", "4901", "default", "EUR", 1, "gw.test", T0 + 500, T0 + 500,
                      groups={7: S.RatingGroupState("time", service_identifier=3)})
    changes.append(("save", fresh))
    changes.append(("save", S.Session.unpack("brand-new", fresh.pack())))  # twice: one record

    def apply(tx: Tx) -> None:
        for what, s in changes:
            if what == "save":
                S.save(tx.write_txn, tx.dbs, s)  # sets due / filed_state as it refiles
                H.put_record(t, S.Session.unpack(s.session_id, s.pack()))
            else:
                S.purge(tx.write_txn, tx.dbs, s)
                assert H.delete(t, s.session_id)
    twin.execute(apply)
    counting = Counting(store)
    written = H.checkpoint(t, counting, chunk=2)
    assert written == len({s.session_id for what, s in changes if what == "save"})
    purged = sum(what == "purge" for what, _ in changes)
    assert counting.counts["put sessions"] == written and counting.counts["delete sessions"] == purged
    assert counting.counts["txns"] == -(-written // 2)
    assert stored(store) == stored(twin)
    assert_table_is_store(t, store)
    assert t.dirty_list().tolist() == [] and t.gone == {}
    fresh_table = loaded(store)
    assert table_records(fresh_table) == table_records(t) and fresh_table.due_repairs == {}
    assert H.checkpoint(t, Counting(store)) == 0


def test_deletes(store: Store) -> None:
    recs = [S.Session(f"s{i}", "a", "a", "p", "EUR", 1, "gw", T0, T0 + i, answers=[[0, "gw", i, b"x" * i]],
                      groups={1: S.RatingGroupState("time")}) for i in range(6)]
    saved(store, recs, force=True)
    t = loaded(store)
    assert H.delete(t, "s1") and H.delete(t, "s2") and not H.delete(t, "nope")
    assert t.row_of("s1") is None and len(t) == 4
    H.put_record(t, recs[2])  # back before the checkpoint: rewritten, not deleted
    new = S.Session("s-new", "b", "b", "p", "EUR", 1, "gw", T0, T0, due=T0)
    row = H.put_record(t, new)
    assert row == 1  # s1's row, freed
    H.delete(t, "s-new")  # never stored: nothing to delete
    counting = Counting(store)
    assert H.checkpoint(t, counting) == 1
    assert counting.counts == {"txns": 1, "put sessions": 1, "delete sessions": 1,
                               "delete session_due": 1}
    raw, due = stored(store)
    assert set(raw) == {b"s0", b"s2", b"s3", b"s4", b"s5"}
    assert due == sorted(S.due_key(S.OPEN, T0 + i, f"s{i}") for i in (0, 2, 3, 4, 5))
    assert_table_is_store(t, store)


def test_load_repairs_a_session_due_index_that_disagrees(store: Store, twin: Store) -> None:
    recs = [S.Session(f"s{i}", "a", "a", "p", "EUR", 1, "gw", T0, T0 + i) for i in range(4)]
    saved(store, recs)
    saved(twin, [S.Session.unpack(s.session_id, s.pack()) for s in recs])
    stray, missing = S.due_key(S.CLOSED, T0, "gone-away"), S.due_key(S.OPEN, T0 + 2, "s2")
    store.execute(lambda tx: (tx.put(SESSION_DUE, stray, b""), tx.delete(SESSION_DUE, missing)))
    t = loaded(store)
    assert t.due_repairs == {stray: False, missing: True}
    assert_table_is_store(t, store)
    counting = Counting(store)
    assert H.checkpoint(t, counting) == 0
    assert counting.counts == {"txns": 1, "put session_due": 1, "delete session_due": 1}
    assert stored(store) == stored(twin) and t.due_repairs == {}


def test_a_failed_chunk_leaves_its_rows_and_the_rest_dirty(store: Store) -> None:
    recs = [S.Session(f"s{i:02d}", "a", "a", "p", "EUR", 1, "gw", T0, T0) for i in range(20)]
    saved(store, recs)
    t = loaded(store)
    for s in reversed(recs):
        s.seen += 100
        s.due, s.filed_state = s.seen, S.OPEN
        H.put_record(t, s)
    H.delete(t, "s19")
    with pytest.raises(OSError):
        H.checkpoint(t, Counting(store, fail_at=2), chunk=5)
    # written in key order: s00..s04 (and the delete, with the first chunk) are in
    assert sorted(H.record(t, int(r)).session_id for r in t.dirty_list()) == \
        [f"s{i:02d}" for i in range(5, 19)]
    assert t.gone == {}
    raw, _ = stored(store)
    assert S.Session.unpack("s04", raw[b"s04"]).seen == T0 + 100
    assert S.Session.unpack("s05", raw[b"s05"]).seen == T0
    assert H.checkpoint(t, Counting(store), chunk=5) == 14
    assert_table_is_store(t, store)
    assert stored(store)[1] == sorted(S.due_key(S.OPEN, T0 + 100, f"s{i:02d}") for i in range(19))


def test_refused_records_change_nothing() -> None:
    t = H.empty()
    ok = S.Session("a", "x", "x", "p", "EUR", 1, "gw", 1, 2, groups={1: S.RatingGroupState("u")})
    H.put_record(t, ok)
    before = table_records(t), t.dirty_list().tolist(), t.meta.copy()
    bad: list[S.Session] = []
    for change in ({"seen": 2**63}, {"session_id": ""}, {"session_id": "x" * 512},
                   {"plan": None}, {"seen_above": [1, True]}, {"answers": [[1, "gw", 2, "str"]]},
                   {"groups": {1: S.RatingGroupState("u", reserved=1)}},  # type: ignore[arg-type]  # refused
                   {"groups": {1: S.RatingGroupState("u", service_identifier=-1)}},
                   {"groups": {2**63: S.RatingGroupState("u")}}):
        s = S.Session.unpack("a", ok.pack())
        for k, v in change.items():
            setattr(s, k, v)
        bad.append(s)
    for s in bad:
        with pytest.raises(InvalidArgument):
            H.put_record(t, s)
    assert table_records(t) == before[0] and t.dirty_list().tolist() == before[1]
    assert (t.meta == before[2]).all()


def test_growth_and_churn() -> None:
    t = H.empty(2)
    recs = [S.Session(f"sess-{i}", f"acct-{i % 50}", f"sub-{i}", f"p{i % 3}", "EUR", 1, f"gw{i % 5}",
                      T0 + i, T0 + i, answers=[[0, "gw", i, bytes(i % 300)]],
                      groups={rg: S.RatingGroupState("time", amount=i) for rg in range(i % 4)})
            for i in range(3000)]
    for s in recs:
        H.put_record(t, s)
    assert t.capacity >= 3000 and t.capacity & (t.capacity - 1) == 0
    assert table_records(t) == {s.session_id: s for s in recs}
    # a session updated 5,000 times (answers kept as remember_answer does, a group added now and
    # then) and 20,000 sessions started and purged: the pools stay a few times the live entries
    hot = recs[7]
    for k in range(5000):
        hot.seen += 1
        hot.mark_seen(k + 1)
        S.remember_answer(hot, k + 1, "gw", k, bytes([k % 256]) * 400)
        if k % 1000 == 0:
            hot.groups[1000 + k] = S.RatingGroupState("bytes", service_identifier=k)
        H.put_record(t, hot)
    for k in range(20_000):
        s = S.Session(f"churn-{k}", "a", "b", "p", "EUR", 1, "gw", T0, T0,
                      answers=[[0, "gw", k, b"y" * 200]], groups={1: S.RatingGroupState("time")})
        H.put_record(t, s)
        assert H.delete(t, s.session_id)
    assert t.rows == 3001 and len(t) == 3000
    assert table_records(t) == {s.session_id: s for s in recs}
    live_bytes = sum(len(a[3]) for s in recs for a in s.answers)
    assert t.answer_arena.size <= 8 * live_bytes
    assert t.groups.shape[0] <= 8 * sum(len(s.groups) for s in recs)
    assert t.answers.shape[0] <= 8 * sum(len(s.answers) for s in recs)
    assert t.text_arena.size <= 8 * sum(len(s.session_id) + len(s.account_id) + len(s.subscription_id)
                                        for s in recs)
    assert t.ids.capacity <= 8192


@njit(cache=False)
def _charge(ints: Any, lists: Any, groups: Any, dirty: Any, dirty_rows: Any, meta: Any, rows: Any,
            now: int, amount: int) -> None:
    """What a kernel does for a CCR-U: the session's activity and its first group's money."""
    for row in rows:
        ints[row, H.I_SEEN] = now
        g = lists[row, H.L_GRP]
        groups[g, H.G_AMOUNT] += amount
        groups[g, H.G_TOTAL] += 1
        H.mark_dirty(dirty, dirty_rows, meta, row)


def test_a_kernel_changes_rows_in_place_and_marks_them(store: Store, twin: Store) -> None:
    recs = [S.Session(f"s{i}", "a", "a", "p", "EUR", 1, "gw", T0, T0,
                      groups={9: S.RatingGroupState("time", amount=i)}) for i in range(8)]
    saved(store, recs)
    copy_sessions(store, twin)
    t = loaded(store)
    rows = np.array([t.row_of("s3"), t.row_of("s5"), t.row_of("s3")], dtype=np.int64)
    _charge(t.ints, t.lists, t.groups, t.dirty, t.dirty_rows, t.meta, rows, T0 + 4, 250)
    assert sorted(t.dirty_list().tolist()) == sorted({int(r) for r in rows})
    for s in recs[3], recs[5]:
        s.seen = T0 + 4
        s.groups[9].amount += 500 if s is recs[3] else 250
        s.groups[9].total_units += 2 if s is recs[3] else 1
        assert s.seen - s.due < S.DUE_STEP  # so sessions.save keeps the key (a kernel that
        #                                     moves seen further refiles due itself)
    twin.execute(lambda tx: [S.save(tx.write_txn, tx.dbs, s) for s in (recs[3], recs[5])])
    assert H.checkpoint(t, store.execute) == 2
    assert stored(store) == stored(twin)
    assert_table_is_store(t, store)
