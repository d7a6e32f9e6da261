"""TariffStore on a real LMDB environment: versions, schedule, cheap current(), old versions kept."""

from __future__ import annotations

import pytest

from balance.store import open_store
from rating.tariff import TariffError
from rating.tariff_store import TariffNotFound, TariffStore

V1 = 'currency = "EUR"\n[[rate]]\nrating_group = 1\nunit = "seconds"\nprice = "0.01"\nincrement = 60\n'
V2 = V1.replace('"0.01"', '"0.02"')
V3 = V1.replace('"0.01"', '"0.03"')


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "data")
    yield s
    s.close()


def test_versions_schedule_and_audit(store):
    ts = TariffStore(store)
    assert ts.current(1000) is None and ts.list() == []
    assert ts.load(V1, "v1.toml", effective_from=1000) == 1
    assert ts.load(V3, "v3.toml", effective_from=3000) == 2      # scheduled change
    assert ts.load(V2, "v2.toml", effective_from=2000) == 3
    price = lambda r: r.find("default", 1).price  # noqa: E731
    assert ts.current(999) is None
    assert (ts.current(1500).version, price(ts.current(1500))) == (1, 10_000)
    assert (ts.at(2500).version, price(ts.at(2500))) == (3, 20_000)
    assert (ts.at(3000).version, price(ts.at(3000))) == (2, 30_000)
    # a correction loaded later with the same instant wins the tie
    assert ts.load(V1, "fix.toml", effective_from=3000) == 4
    assert ts.at(3000).version == 4
    assert [r["version"] for r in ts.list()] == [1, 2, 3, 4]
    assert ts.record(1)["text"] == V1 and "text" not in ts.list()[0]
    with pytest.raises(TariffNotFound):
        ts.get(99)


def test_current_is_cached_until_a_new_version_arrives(store, tmp_path):
    ts = TariffStore(store)
    ts.load(V1, "v1.toml", effective_from=0)
    a = ts.current(10)
    assert ts.current(10) is a                       # same compiled object: no recompile
    other = TariffStore(store)                       # e.g. the CLI in another process
    other.load(V2, "v2.toml", effective_from=5)
    b = ts.current(10)
    assert b is not a and b.version == 2 and b.find("default", 1).price == 20_000
    assert ts.get(1) is a                            # old versions stay for re-rating


def test_invalid_text_stores_nothing(store):
    ts = TariffStore(store)
    with pytest.raises(TariffError, match=r"^bad.toml:4: unknown unit"):
        ts.load(V1.replace("seconds", "parsecs"), "bad.toml")
    assert ts.list() == []


def test_raw_lmdb_environment_works_too(tmp_path):
    import lmdb
    env = lmdb.open(str(tmp_path / "raw"), max_dbs=8)
    try:
        ts = TariffStore(env)
        ts.load(V1, "v1.toml", effective_from=0)
        assert ts.current(1).version == 1
    finally:
        env.close()
