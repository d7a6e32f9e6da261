"""balance.schema is the one list of named dbs and fixed keys: the components' own spellings of the
same keys must match it byte for byte (ocs imports them from it; rating, which may use only
balance.money, still spells its own), open_store opens every db, and integer values have one
encoding (i64)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from balance import schema
from balance.records import be8
from balance.store import open_store
from ocs.billing import cdr
from ocs.billing.export import exporter
from ocs.billing.invoice import numbering
from ocs.charging import credit
from rating import tariff_store


def test_fixed_keys_match_the_components() -> None:
    assert credit.OPEN_SESSIONS_KEY == schema.META_OPEN_SESSIONS
    assert cdr.SEQ_KEY == schema.META_CDR_SEQ
    assert (exporter.CHECKPOINT, exporter.INTENT, exporter.RAN, exporter.FILE_PREFIX,
            exporter.CONSUMER_PREFIX) == (schema.EXPORT_CHECKPOINT, schema.EXPORT_INTENT,
                                          schema.EXPORT_RAN, schema.EXPORT_FILE_PREFIX,
                                          schema.EXPORT_CONSUMER_PREFIX)
    assert (numbering.SEQ, numbering.PREFIX) == (schema.INVOICE_SEQ, schema.INVOICE_PREFIX)
    assert (tariff_store._COUNTER, tariff_store._CHANGES) == (schema.TARIFF_COUNTER,
                                                              schema.TARIFF_CHANGES)
    assert set(getattr(credit, "SERVER_DBS", schema.SERVER_DBS)) == set(schema.SERVER_DBS)


def test_every_db_is_declared_once_and_opened(tmp_path: Path) -> None:
    assert len(set(schema.ALL_DBS)) == len(schema.ALL_DBS)
    with open_store(tmp_path / "db", sync=False) as store:
        assert set(store.dbs) == set(schema.ALL_DBS)
        assert set(credit.open_dbs(store)) == set(schema.ALL_DBS)


def test_integer_values_have_one_encoding() -> None:
    for n in (0, 1, 255, 10**12, 2**63 - 1, -1, -(10**12), -(2**63)):
        raw = schema.pack_i64(n)
        assert len(raw) == 8 and schema.unpack_i64(raw) == n
    assert schema.pack_i64(-2) == b"\xff" * 7 + b"\xfe"   # signed, two's complement, big-endian
    for n in (0, 7, 2**40, 2**63 - 1):   # the unsigned be8 other components write reads the same
        assert schema.pack_i64(n) == be8(n) == n.to_bytes(8, "big")
    with pytest.raises(struct.error):
        schema.unpack_i64(b"42")          # a version-1 ASCII figure is refused, not misread
    with pytest.raises(struct.error):
        schema.pack_i64(2**63)            # out of range is an error, never a wrapped figure
