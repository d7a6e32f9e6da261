"""The numba key index (ocs.charging.hot.index) against a Python dict, the model.

Every step of a random sequence (put, delete, get, grow, compaction, batch lookup) must leave the
index holding exactly the dict's items, with its counters and load bounds true. The same machine
runs with the hash narrowed to 2 bits (every key collides with a quarter of the others, so probe
runs are long and the byte compare decides) and from a 4-slot table with no arena (every few steps
a grow). Keys are byte-exact: NUL, 0xFF, prefixes of each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from ocs.charging.hot import index as X
from protocol import ccr_batch
from protocol.ccr import encode_ccr
from protocol.records import CCR

KEY = st.one_of(
    st.binary(min_size=1, max_size=6),
    st.lists(st.sampled_from([b"\0", b"\xff", b"a", b"\0\xff"]), min_size=1, max_size=5).map(b"".join),
    st.binary(min_size=1, max_size=X.MAX_KEY),
    st.integers(0, 40).map(lambda n: b"s;%02d" % n),  # same length and prefix, as Session-Ids
)
VALUE = st.integers(0, 2**63 - 1)


def _fnv1a_fmix64(key: bytes) -> int:
    """The hash as specified, in plain Python (the kernel's must equal it bit for bit)."""
    m = 2**64 - 1
    h = 0xCBF29CE484222325
    for c in key:
        h = ((h ^ c) * 0x100000001B3) & m
    for mul in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h ^= h >> 33
        h = (h * mul) & m
    h ^= h >> 33
    return h - 2**64 if h >= 2**63 else h


def _batch(keys: list[bytes]) -> tuple[X.Bytes, X.Int64s, X.Int64s, X.Int64s]:
    """keys laid out as a batch buffer: one 'frame' per key with 3 bytes of junk before it."""
    frames = [b"\xffJ\0" + k for k in keys]
    starts = np.zeros(len(frames) + 1, dtype=np.int64)
    np.cumsum([len(f) for f in frames], out=starts[1:])
    buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
    offs = np.full(len(keys), 3, dtype=np.int64)
    lens = np.array([len(k) for k in keys], dtype=np.int64)
    return buf, starts, offs, lens


def check_consistent(ix: X.KeyIndex, model: dict[bytes, int]) -> None:
    """The index holds exactly the model's items, and its counters tell the truth."""
    assert len(ix) == len(model)
    assert dict(ix.items()) == model
    sizes = ix.slots[:, X.S_LEN]
    live = sizes >= 0
    assert int(live.sum()) == ix.meta[X.M_LIVE]
    assert int((sizes == X.TOMBSTONE).sum()) == ix.meta[X.M_TOMBSTONES]
    assert set(np.unique(sizes[~live]).tolist()) <= {X.EMPTY, X.TOMBSTONE}
    assert (ix.meta[X.M_LIVE] + ix.meta[X.M_TOMBSTONES]) * 4 <= ix.capacity * 3  # the load bound
    assert (sizes == X.EMPTY).any()  # so every probe sequence ends
    assert ix.meta[X.M_USED] - ix.meta[X.M_DEAD] == sum(len(k) for k in model)
    assert ix.meta[X.M_USED] <= ix.arena.size
    assert (ix.slots[live, X.S_HASH] == [_fnv1a_fmix64(k) & int(ix.meta[X.M_HASH_MASK])
                                         for k, _ in ix.items()]).all()


class Model(RuleBasedStateMachine):
    """put / delete / get / grow / compaction / batch lookup against a dict."""

    keys = Bundle("keys")
    hash_mask = -1
    capacity, arena_bytes = 16, 1024

    def __init__(self) -> None:
        super().__init__()
        self.ix = X.KeyIndex.empty(self.capacity, self.arena_bytes)
        self.ix.meta[X.M_HASH_MASK] = self.hash_mask
        self.model: dict[bytes, int] = {}

    @rule(target=keys, key=KEY)
    def new_key(self, key: bytes) -> bytes:
        return key

    @rule(key=keys, value=VALUE)
    def put(self, key: bytes, value: int) -> None:
        self.ix.put(key, value)
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        assert self.ix.delete(key) == (self.model.pop(key, None) is not None)
        assert self.ix.meta[X.M_DEAD] * 2 <= self.ix.meta[X.M_USED]  # delete() compacted if due

    @rule(key=keys)
    def kernel_delete(self, key: bytes) -> None:
        """A kernel's delete: no compaction until compact_if_needed (between batches)."""
        k = np.frombuffer(key, dtype=np.uint8)
        assert X.delete(self.ix.slots, self.ix.arena, self.ix.meta, k, 0, k.size) == (
            self.model.pop(key, None) is not None)

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.ix.get(key) == self.model.get(key)

    @rule(keys=st.lists(keys, max_size=8), values=st.lists(VALUE, min_size=8, max_size=8))
    def put_batch(self, keys: list[bytes], values: list[int]) -> None:
        buf, starts, offs, lens = _batch(keys)
        self.ix.put_batch(buf, starts, offs, lens, np.array(values[:len(keys)], dtype=np.int64))
        self.model.update(zip(keys, values, strict=False))

    @rule(keys=st.lists(keys, max_size=10))
    def lookup_batch(self, keys: list[bytes]) -> None:
        buf, starts, offs, lens = _batch(keys)
        got = self.ix.lookup_batch(buf, starts, offs, lens).tolist()
        assert got == [self.model.get(k, -1) for k in keys]

    @rule(keys=st.integers(1, 40), key_bytes=st.integers(0, 2000))
    def grow(self, keys: int, key_bytes: int) -> None:
        before = self.ix.capacity
        self.ix.grow(keys, key_bytes)
        assert self.ix.room(keys, key_bytes)
        assert self.ix.capacity >= before and self.ix.meta[X.M_TOMBSTONES] == 0
        assert self.ix.meta[X.M_DEAD] == 0

    @rule()
    def compact_if_needed(self) -> None:
        due = self.ix.meta[X.M_DEAD] * 2 > self.ix.meta[X.M_USED]
        assert self.ix.compact_if_needed() == due
        assert self.ix.meta[X.M_DEAD] * 2 <= self.ix.meta[X.M_USED]

    @invariant()
    def agrees(self) -> None:
        check_consistent(self.ix, self.model)


class CollidingModel(Model):
    hash_mask = 3  # 4 distinct hashes: long probe runs, the byte compare decides


class TinyModel(Model):
    capacity, arena_bytes = 4, 0  # a grow every few puts


_SETTINGS = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestModel = Model.TestCase
TestModel.settings = _SETTINGS
TestCollidingModel = CollidingModel.TestCase
TestCollidingModel.settings = _SETTINGS
TestTinyModel = TinyModel.TestCase
TestTinyModel.settings = _SETTINGS


@given(st.binary(min_size=1, max_size=X.MAX_KEY), st.binary(max_size=5))
@settings(max_examples=200, deadline=None)
def test_the_hash_is_fnv1a_then_fmix64_at_any_offset(key: bytes, before: bytes) -> None:
    buf = np.frombuffer(before + key + b"\xff", dtype=np.uint8)
    assert X.key_hash(buf, len(before), len(key)) == _fnv1a_fmix64(key)


def test_session_ids_spread_over_the_slots() -> None:
    """Keys that differ only in their last digits (Session-Ids) fill a table with short probes:
    the low bits the slot is taken from are well mixed."""
    ix = X.KeyIndex.empty(2**14, 2**20)
    keys = [b"pgw1.operator.example;1700000000;%d" % n for n in range(12_000)]
    for n, k in enumerate(keys):
        ix.put(k, n)
    assert ix.capacity == 2**14  # 12,000 <= 3/4 of 16,384: no grow
    home = ix.slots[:, X.S_HASH] & (ix.capacity - 1)
    occupied = np.flatnonzero(ix.slots[:, X.S_LEN] >= 0)
    probes = ((occupied - home[occupied]) & (ix.capacity - 1)) + 1
    assert probes.mean() < 3.0  # linear probing at load 0.73 with a random hash: ~2.4


def test_a_batch_tells_apart_keys_of_one_hash_length_and_first_byte() -> None:
    """Every key hashes alike (mask 0): only the byte compare can tell them apart."""
    ix = X.KeyIndex.empty(64, 1024)
    ix.meta[X.M_HASH_MASK] = 0
    keys = [b"s;%02d" % n for n in range(40)]
    for n, k in enumerate(keys[::2]):
        ix.put(k, n)
    got = ix.lookup_batch(*_batch(keys)).tolist()
    assert got == [n // 2 if n % 2 == 0 else -1 for n in range(40)]
    assert got == [-1 if ix.get(k) is None else ix.get(k) for k in keys]


def test_keys_are_byte_exact() -> None:
    keys = [b"\0", b"\0\0", b"\xff", b"\xff\0", b"\0\xff", b"a", b"a\0", b"A", b"\0a",
            b"\xff" * X.MAX_KEY, b"\0" * X.MAX_KEY, b"\xff" * (X.MAX_KEY - 1) + b"\0"]
    ix = X.KeyIndex.empty()
    for n, k in enumerate(keys):
        ix.put(k, n)
    assert [ix.get(k) for k in keys] == list(range(len(keys)))
    assert ix.get(b"\0\0\0") is None and ix.get(b"a\0\0") is None and ix.get(b"\xfe") is None
    assert ix.delete(b"\0") and ix.get(b"\0\0") == 1 and ix.get(b"\0") is None
    check_consistent(ix, {k: n for n, k in enumerate(keys) if k != b"\0"})


@pytest.mark.parametrize("key", [b"", b"x" * (X.MAX_KEY + 1), b"x" * 10_000])
def test_empty_and_overlong_keys_are_refused(key: bytes) -> None:
    ix = X.KeyIndex.empty()
    ix.put(b"x", 1)
    calls: list[Callable[[], object]] = [lambda: ix.put(key, 1), lambda: ix.get(key),
                                         lambda: ix.delete(key)]
    for call in calls:
        with pytest.raises(ValueError, match=r"1\.\.511 bytes"):
            call()
    buf, starts, offs, lens = _batch([b"ok", key])
    with pytest.raises(ValueError, match=r"1\.\.511 bytes"):
        ix.put_batch(buf, starts, offs, lens, np.array([1, 2], dtype=np.int64))
    check_consistent(ix, {b"x": 1})  # nothing half done


def test_bad_values_and_non_bytes_are_refused() -> None:
    ix = X.KeyIndex.empty()
    for value in (-1, -5, 2**63):
        with pytest.raises(ValueError, match="value"):
            ix.put(b"k", value)
    for not_bytes in ("k", bytearray(b"k"), memoryview(b"k")):
        wrong: Any = not_bytes  # the refusal under test: the type a caller should not pass
        with pytest.raises(TypeError, match="bytes"):
            ix.put(wrong, 1)
        with pytest.raises(TypeError, match="bytes"):
            ix.get(wrong)
    buf, starts, offs, lens = _batch([b"a", b"b"])
    with pytest.raises(ValueError, match="value"):
        ix.put_batch(buf, starts, offs, lens, np.array([1, -1], dtype=np.int64))
    with pytest.raises(ValueError, match="value"):
        ix.put_batch(buf, starts, offs, lens, np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="capacity"):
        X.KeyIndex.empty(12)
    ix.put(b"k", 2**63 - 1)
    check_consistent(ix, {b"k": 2**63 - 1})


def test_a_kernel_insert_refuses_when_full_and_changes_nothing() -> None:
    ix = X.KeyIndex.empty(4, 6)
    keys = [np.frombuffer(k, dtype=np.uint8) for k in (b"aa", b"bb", b"cc", b"dd")]
    args = (ix.slots, ix.arena, ix.meta)
    assert all(X.insert(*args, k, 0, 2, n) for n, k in enumerate(keys[:3]))  # 3 of 4: the bound
    before = [a.copy() for a in args]
    assert not X.insert(*args, keys[3], 0, 2, 3)  # a 4th key would pass 3/4
    assert all((a == b).all() for a, b in zip(args, before, strict=True))
    assert X.insert(*args, keys[0], 0, 2, 9)  # an existing key still takes a new value
    assert X.delete(*args[:3], keys[1], 0, 2)
    assert not X.insert(*args, keys[3], 0, 2, 3)  # a free slot now, but the arena (6 bytes) is full
    ix.grow(1, 2)
    assert X.insert(ix.slots, ix.arena, ix.meta, keys[3], 0, 2, 3)
    check_consistent(ix, {b"aa": 9, b"cc": 2, b"dd": 3})


def test_growth_doubles_and_a_churn_does_not_grow_forever() -> None:
    ix = X.KeyIndex.empty(4, 0)
    model = {}
    for n in range(3000):
        ix.put(b"s;%d" % n, n)
        model[b"s;%d" % n] = n
    assert ix.capacity == 4096  # 3000 keys at <= 3/4: the smallest power of two
    check_consistent(ix, model)
    for n in range(3000, 60_000):  # as many sessions end as start
        ix.put(b"s;%d" % n, n)
        assert ix.delete(b"s;%d" % (n - 3000))
        model[b"s;%d" % n] = n
        del model[b"s;%d" % (n - 3000)]
    # 3000 keys fit 4096 slots; the churn's tombstones double that once (to 3/8 load), and from
    # there tombstones outnumber the keys when the table fills, so a rebuild keeps the size
    assert ix.capacity == 8192
    assert ix.arena.size < 4 * sum(len(k) for k in model)  # compacted, not grown, by the churn
    check_consistent(ix, model)


def test_compaction_returns_deleted_bytes() -> None:
    ix = X.KeyIndex.empty(64, 4096)
    keys = [bytes([65 + n]) * 100 for n in range(30)]
    for n, k in enumerate(keys):
        ix.put(k, n)
    for k in keys[:15]:
        ix.delete(k)
    assert ix.meta[X.M_USED] == 3000 and ix.meta[X.M_DEAD] == 1500  # half: not past it yet
    ix.delete(keys[15])
    assert ix.meta[X.M_USED] == 14 * 100 and ix.meta[X.M_DEAD] == 0  # compacted
    arena = ix.arena
    for k in keys[16:18]:
        X.delete(ix.slots, ix.arena, ix.meta, np.frombuffer(k, dtype=np.uint8), 0, 100)
    assert not ix.compact_if_needed() and ix.arena is arena  # 200 of 1400: not due
    check_consistent(ix, {k: n for n, k in enumerate(keys) if n >= 18})


def test_batch_lookup_equals_per_key_lookups_on_scanned_ccrs() -> None:
    """The fast path's way: the scanner's Session-Id and Subscription-Id-Data spans, looked up
    in one call each, agree with get() key by key (absent fields and unknown keys give -1)."""
    ccrs = [CCR(session_id=f"pgw1.operator.example;1700000000;{n}", origin_host="pgw1",
                origin_realm="operator.example", destination_realm="ocs.example",
                service_context_id="32251@3gpp.org", request_type=2, request_number=n,
                subscription_ids=[(0, f"4670{n % 7}")] if n % 5 else []) for n in range(64)]
    frames = [encode_ccr(c, n, n) for n, c in enumerate(ccrs)]
    rows = ccr_batch.scan(frames)
    assert rows[:, ccr_batch.F_OK].all()
    starts = np.zeros(len(frames) + 1, dtype=np.int64)
    np.cumsum([len(f) for f in frames], out=starts[1:])
    buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
    sessions, accounts = X.KeyIndex.empty(), X.KeyIndex.empty()
    for n, c in enumerate(ccrs[::2]):
        sessions.put(c.session_id.encode(), n)
    for n in range(0, 7, 2):
        accounts.put(f"4670{n}".encode(), 100 + n)
    sid = rows[:, ccr_batch.F_TEXT], rows[:, ccr_batch.F_TEXT + 1]
    data = rows[:, ccr_batch.F_SUB + 1], rows[:, ccr_batch.F_SUB + 2]
    got_s = sessions.lookup_batch(buf, starts, *sid)
    got_a = accounts.lookup_batch(buf, starts, *data)
    assert got_s.tolist() == [sessions.get(c.session_id.encode()) if n % 2 == 0 else -1
                              for n, c in enumerate(ccrs)]
    want_a = [accounts.get(c.subscription_ids[0][1].encode()) if c.subscription_ids else None
              for c in ccrs]
    assert got_a.tolist() == [-1 if v is None else v for v in want_a]
    assert (got_s[::2] == np.arange(32)).all() and (got_a >= 0).sum() > 0


def test_the_arrays_are_the_state() -> None:
    """A checkpoint writes the three arrays; an index made of the arrays read back is the same."""
    ix = X.KeyIndex.empty()
    model = {b"acct;%d" % n: n * 7 for n in range(100)}
    for k, v in model.items():
        ix.put(k, v)
    ix.delete(b"acct;3")
    del model[b"acct;3"]
    again = X.KeyIndex(ix.slots.copy(), ix.arena.copy(), ix.meta.copy())
    check_consistent(again, model)
    assert all(again.get(k) == v for k, v in model.items())
