"""The data format version and the migration from version 1 (balance.migrate): an environment
written by the old code (decimal ASCII usage counters and open-session count, msgpack EXPORT_RAN)
reads the same through today's readers once open_store migrated it, in one write txn, so a kill -9
during it leaves the old format or the new, never a mix; a newer version, or an old one opened
read-only, is refused in one line; and a server-like run writes no ASCII integer any more."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lmdb
import msgpack
import pytest

from balance import migrate, ops, schema
from balance.money import to_micro
from balance.records import be8
from balance.store import Tx, open_store
from ocs.billing.export import exporter
from ocs.charging import counters
from ocs.charging.inprocess import InProcessEngine
from protocol import constants as C
from protocol.cca import decode_cca
from protocol.records import CCR, MSCCRequest, Units

T0 = 1_760_000_000          # 2025-10-09: the month of the usage counters below
RAN_SERVER, RAN_BILLING = T0 - 3600, T0 - 60
FILE_ID = 0x2F72616E        # its be8 ends in b"/ran": a file-log key that must stay untouched


def _raw(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=len(schema.ALL_DBS) + 8, map_size=1 << 30)


def write_old(path: Path, usage: dict[bytes, int], open_sessions: int | None = 3) -> None:
    """A version-1 environment: a fresh store's dbs with the old bytes written straight into them
    and no version key."""
    open_store(path, sync=False).close()
    env = _raw(path)
    try:
        dbs = {n: env.open_db(n.encode()) for n in schema.ALL_DBS}
        with env.begin(write=True) as txn:
            assert txn.delete(schema.META_SCHEMA_VERSION, db=dbs[schema.META])
            for key, value in usage.items():
                txn.put(key, str(value).encode(), db=dbs[schema.USAGE])
            if open_sessions is not None:
                txn.put(schema.META_OPEN_SESSIONS, str(open_sessions).encode(), db=dbs[schema.META])
            export = dbs[schema.EXPORT]
            billing = schema.EXPORT_CONSUMER_PREFIX + b"billing/"
            txn.put(schema.EXPORT_RAN, msgpack.packb(RAN_SERVER), db=export)
            txn.put(schema.EXPORT_CHECKPOINT, be8(7), db=export)
            txn.put(billing + schema.EXPORT_RAN, msgpack.packb(RAN_BILLING), db=export)
            txn.put(billing + schema.EXPORT_CHECKPOINT, be8(5), db=export)
            txn.put(billing + schema.EXPORT_FILE_PREFIX + be8(FILE_ID),
                    msgpack.packb(["/x.csv", "csv", FILE_ID, FILE_ID, 10, T0]), db=export)
    finally:
        env.close()


def dump(path: Path) -> dict[str, dict[bytes, bytes]]:
    """Every db's every record, raw (the store closed in this process)."""
    env = _raw(path)
    try:
        with env.begin() as txn:
            return {n: dict(txn.cursor(db=env.open_db(n.encode(), txn=txn))) for n in schema.ALL_DBS}
    finally:
        env.close()


def usage_keys() -> dict[bytes, int]:
    keys = {counters.period_key("4901", T0, 100): 4_500, counters.period_key("4902", T0, 7): 0,
            counters._refundable_key("4901", 300): to_micro("0.35")}
    return keys


def counts(path: Path) -> tuple[int, int, int, int | None, int | None, int]:
    """(usage 4901/100, refundable 4901/300, open sessions, last runs of server-files and billing,
    billing's checkpoint) through the code's readers."""
    with open_store(path, sync=False) as store:
        ctx: Any = SimpleNamespace(dbs=store.dbs)
        tiered: Any = SimpleNamespace(tiers=True)

        def read(tx: Tx) -> tuple[int, int, int, int | None, int | None, int]:
            tx.now = T0
            return (counters.period_usage(tx, ctx, "4901", 100, tiered),
                    counters.refundable(tx, ctx, "4901", 300),
                    counters.open_sessions(tx.read_txn, store.dbs),
                    exporter.last_ran(tx), exporter.last_ran(tx, "billing"),
                    exporter.checkpoint(tx, "billing"))
        return store.execute(read)


def version(path: Path) -> int | None:
    raw = dump(path)[schema.META].get(schema.META_SCHEMA_VERSION)
    return None if raw is None else schema.unpack_i64(raw)


def test_an_old_environment_is_migrated_and_reads_the_same(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_old(data, usage_keys())
    before = dump(data)
    assert version(data) is None
    assert counts(data) == (4_500, to_micro("0.35"), 3, RAN_SERVER, RAN_BILLING, 5)
    after = dump(data)
    assert version(data) == schema.SCHEMA_VERSION == 3
    # the integers are i64 now; every other record is byte for byte what it was
    assert after[schema.USAGE] == {k: schema.pack_i64(v) for k, v in usage_keys().items()}
    assert after[schema.META][schema.META_OPEN_SESSIONS] == schema.pack_i64(3)
    billing_ran = schema.EXPORT_CONSUMER_PREFIX + b"billing/" + schema.EXPORT_RAN
    assert after[schema.EXPORT][schema.EXPORT_RAN] == schema.pack_i64(RAN_SERVER)
    assert after[schema.EXPORT][billing_ran] == schema.pack_i64(RAN_BILLING)
    changed = {(n, k) for n in schema.ALL_DBS for k in before[n].keys() | after[n].keys()
               if before[n].get(k) != after[n].get(k)}
    assert changed == ({(schema.USAGE, k) for k in usage_keys()}
                       | {(schema.META, schema.META_OPEN_SESSIONS),
                          (schema.META, schema.META_SCHEMA_VERSION),
                          (schema.EXPORT, schema.EXPORT_RAN), (schema.EXPORT, billing_ran)})
    # and the code goes on counting from the migrated figures
    with open_store(data, sync=False) as store:
        store.execute(lambda tx: counters.adjust_open_sessions(tx, store.dbs, +1))
        with store.read() as view:
            assert counters.open_sessions(view.txn, view.dbs) == 4


def test_an_old_environment_without_counters_gains_only_the_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_old(data, {}, open_sessions=None)
    before = dump(data)
    assert counts(data)[:3] == (0, 0, 0)
    after = dump(data)
    assert after[schema.META].pop(schema.META_SCHEMA_VERSION) == schema.pack_i64(3)
    assert {k: v for k, v in after.items() if k != schema.EXPORT} == {
        k: v for k, v in before.items() if k != schema.EXPORT}


def test_a_version_2_bundle_gains_an_unknown_initial_amount(tmp_path: Path) -> None:
    """Version 3: a bundle's ninth field, the amount it was sold with; a bundle stored before
    gets 0 (not known) and reads as before."""
    from balance.records import Bundle
    data = tmp_path / "data"
    open_store(data, sync=False).close()
    old = msgpack.packb(["seconds", 600, 30, [100], None, None, 0, T0])
    key = b"4901\x001"
    env = _raw(data)
    try:
        dbs = {n: env.open_db(n.encode()) for n in (schema.BUNDLES, schema.META)}
        with env.begin(write=True) as txn:
            txn.put(key, old, db=dbs[schema.BUNDLES])
            txn.put(schema.META_SCHEMA_VERSION, schema.pack_i64(2), db=dbs[schema.META])
    finally:
        env.close()
    open_store(data, sync=False).close()
    after = dump(data)
    assert version(data) == schema.SCHEMA_VERSION
    assert msgpack.unpackb(after[schema.BUNDLES][key]) == [*msgpack.unpackb(old), 0]
    b = Bundle.unpack(key, after[schema.BUNDLES][key])
    assert (b.remaining, b.reserved, b.rating_groups, b.created, b.initial) == (600, 30, [100], T0, 0)


def test_migrating_twice_is_a_no_op(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_old(data, usage_keys())
    open_store(data, sync=False).close()
    once = dump(data)
    open_store(data, sync=False).close()
    assert dump(data) == once
    with open_store(data, sync=False) as store:
        assert store.execute(lambda tx: migrate.migrate(store.path, tx.write_txn, store.dbs)) == 0
    assert dump(data) == once


def test_a_fresh_store_is_of_the_current_version(tmp_path: Path) -> None:
    open_store(tmp_path / "data", sync=False).close()
    assert version(tmp_path / "data") == schema.SCHEMA_VERSION


def _set_version(path: Path, value: int) -> None:
    env = _raw(path)
    try:
        with env.begin(write=True) as txn:
            txn.put(schema.META_SCHEMA_VERSION, schema.pack_i64(value), db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_newer_version_is_refused_not_misread(tmp_path: Path, readonly: bool) -> None:
    data = tmp_path / "data"
    open_store(data, sync=False).close()
    _set_version(data, schema.SCHEMA_VERSION + 1)
    before = dump(data)
    with pytest.raises(migrate.StoreFormatError) as err:
        open_store(data, sync=False, readonly=readonly)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert f"version {schema.SCHEMA_VERSION + 1} is newer" in message
    assert f"({schema.SCHEMA_VERSION})" in message and str(data) in message
    assert dump(data) == before
    _set_version(data, schema.SCHEMA_VERSION)   # the refused open left nothing open behind
    open_store(data, sync=False, readonly=readonly).close()


def test_a_read_only_open_of_an_old_environment_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_old(data, usage_keys())
    before = dump(data)
    with pytest.raises(migrate.StoreFormatError, match=r"version 1 is older .* open it once "
                       r"writable \(e\.g\. `ocs serve`\) to migrate it$"):
        open_store(data, readonly=True)
    assert dump(data) == before
    assert counts(data)[2] == 3     # a writable open then migrates it
    open_store(data, readonly=True).close()


def test_a_bad_old_value_is_refused_and_nothing_migrated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_old(data, usage_keys())
    env = _raw(data)
    with env.begin(write=True) as txn:
        txn.put(b"zz", b"12 units", db=env.open_db(b"usage", txn=txn))
    env.close()
    before = dump(data)
    with pytest.raises(migrate.StoreFormatError, match=r"cannot migrate usage b'zz': b'12 units'"):
        open_store(data, sync=False)
    assert dump(data) == before


# -- kill -9 during the migration ------------------------------------------------------------------

MIGRATE = r"""
import sys
from balance import migrate
step = migrate._v1_to_v2

def announced(*args):
    print("migrating", flush=True)   # inside the write txn, before the first rewrite
    return step(*args)

migrate._v1_to_v2 = announced
from balance.store import open_store
open_store(sys.argv[1]).close()
print("done", flush=True)
"""

BIG = 200_000   # usage counters: a migration of a few tenths of a second


def big_usage() -> Iterator[tuple[bytes, int]]:
    for i in range(BIG):
        yield counters.period_key(f"acct{i:07d}", T0, i % 5), i * 7919


def state(path: Path) -> str:
    """"old" or "new" when the whole environment is in one format; AssertionError on a mix."""
    env = _raw(path)
    try:
        with env.begin() as txn:
            meta, usage = (env.open_db(n, txn=txn) for n in (b"meta", b"usage"))
            ver = txn.get(schema.META_SCHEMA_VERSION, db=meta)
            old = ver is None
            assert old or schema.unpack_i64(ver) == schema.SCHEMA_VERSION
            enc = (lambda n: str(n).encode()) if old else schema.pack_i64
            assert txn.get(schema.META_OPEN_SESSIONS, db=meta) == enc(3)
            ran = txn.get(schema.EXPORT_RAN, db=env.open_db(b"export", txn=txn))
            assert ran == (msgpack.packb(RAN_SERVER) if old else schema.pack_i64(RAN_SERVER))
            seen = 0
            for (key, raw), (want_key, want) in zip(txn.cursor(db=usage), sorted(big_usage()),
                                                     strict=True):
                assert key == want_key and raw == enc(want), (key, raw, old)
                seen += 1
            assert seen == BIG
            return "old" if old else "new"
    finally:
        env.close()


def _start(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", MIGRATE, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "migrating\n", (line, proc.stderr.read() if proc.stderr else "")
    return proc


@pytest.mark.slow
def test_kill_9_during_the_migration_leaves_old_or_new_never_a_mix(tmp_path: Path) -> None:
    template = tmp_path / "template"
    write_old(template, dict(big_usage()))
    assert state(template) == "old"

    def fresh(n: int) -> Path:
        path = tmp_path / f"run{n}"
        path.mkdir()
        shutil.copyfile(template / "data.mdb", path / "data.mdb")
        return path

    # one migration to its end: how long it takes from the first rewrite to the commit
    path = fresh(0)
    proc = _start(path)
    started = time.monotonic()
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 0 and out == "done\n", err
    assert state(path) == "new"

    rng = random.Random()
    seed = rng.randrange(1 << 32)
    rng.seed(seed)
    delays = [0.0] + [rng.uniform(0, took * 1.5) for _ in range(5)]
    found = []
    for n, delay in enumerate(delays, 1):
        path = fresh(n)
        proc = _start(path)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=60)
        found.append((round(delay, 3), proc.returncode, state(path)))
        assert counts(path)[2] == 3          # the next open migrates (again, or not at all)
        assert state(path) == "new"
        shutil.rmtree(path)
    # killed at once after the migration began, the txn had not committed: the old format
    assert found[0][1:] == (-9, "old"), (seed, took, found)


# -- what a server-like run writes ------------------------------------------------------------------

TARIFF = """
currency = "EUR"

[[plan]]
name = "default"

[[rate]]
rating_group = 100
unit = "seconds"
price = "0.01"
increment = 60
[[rate.tier]]
from = 600
price = "0.005"

[[rate]]
rating_group = 300
unit = "events"
price = "0.05"
increment = 1
"""
ASCII_INT = re.compile(rb"[+-]?[0-9]+")


def _ccr(sid: str, rtype: int, number: int, mscc: list[MSCCRequest], **kw: Any) -> CCR:
    return CCR(session_id=sid, origin_host="gw.test", origin_realm="test", destination_realm="test",
               auth_application_id=4, service_context_id="32251@3gpp.org", request_type=rtype,
               request_number=number, subscription_ids=[(C.SubscriptionIdType.END_USER_E164, "4901")],
               mscc=mscc, hop_by_hop=100 + number, end_to_end=200 + number, **kw)


def test_a_server_like_run_writes_no_ascii_integer(tmp_path: Path) -> None:
    initial, update, termination, event = (int(t) for t in C.CCRequestType)

    def voice(requested: int | None, used: int | None = None) -> list[MSCCRequest]:
        return [MSCCRequest(rating_group=100, requested=None if requested is None else Units(time=requested),
                            used=[] if used is None else [Units(time=used)])]

    def sms(n: int) -> list[MSCCRequest]:
        return [MSCCRequest(rating_group=300, requested=Units(service_specific_units=n))]
    with InProcessEngine(tmp_path / "data", TARIFF) as engine:
        engine.store.execute(lambda tx: ops.create_account(tx, None, account_id="4901",
                                                           currency="EUR", balance=to_micro("10")))
        for at, request in enumerate([
                _ccr("v;1", initial, 0, voice(120)),
                _ccr("v;1", update, 1, voice(60, used=45)),
                _ccr("v;1", termination, 2, voice(None, used=30)),
                _ccr("e;1", event, 0, sms(2), requested_action=C.RequestedAction.DIRECT_DEBITING),
                _ccr("e;2", event, 0, sms(1), requested_action=C.RequestedAction.REFUND_ACCOUNT)]):
            assert decode_cca(engine.answer(request, now=T0 + at)).result_code == C.DIAMETER_SUCCESS
    values = dump(tmp_path / "data")
    usage, meta = values[schema.USAGE], values[schema.META]
    assert usage[counters.period_key("4901", T0, 100)] == schema.pack_i64(75)
    assert usage[counters._refundable_key("4901", 300)] == schema.pack_i64(to_micro("0.05"))
    assert meta[schema.META_OPEN_SESSIONS] == schema.pack_i64(0)
    assert meta[schema.META_SCHEMA_VERSION] == schema.pack_i64(schema.SCHEMA_VERSION)
    meta.pop(schema.META_IDEM_PURGE_AT, None)   # an idem key, not an integer
    for db, records in ((schema.USAGE, usage), (schema.META, meta)):
        for key, raw in records.items():
            assert len(raw) == 8 and not ASCII_INT.fullmatch(raw), (db, key, raw)
