"""balance.schema is the one list of named dbs and fixed keys: the components' own spellings of the
same keys must match it byte for byte (ocs imports them from it; rating, which may use only
balance.money, still spells its own), and open_store opens every db."""

from __future__ import annotations

from pathlib import Path

from balance import schema
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
