"""Tariff versions over HTTP: one version with its text, a check that stores nothing, a load in
force for the very next request (the real server, httpx, no sleep)."""

from __future__ import annotations

import hashlib

import pytest
from server_harness import TARIFF, provision, start_server
from test_api import client, new_key, problem

ACCT = "491790000101"


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("tariffs") / "d"
    provision(data, {ACCT: {"balance": "5"}})
    srv = start_server(data, "--api", "127.0.0.1:0", "--no-cdr-export", "--api-rate-limit", "0")
    keys = {role: new_key(data, f"t-{role}", role) for role in ("admin", "readonly")}
    keys["selfcare"] = new_key(data, "t-self", "selfcare", "--account", ACCT)
    yield srv, keys
    assert srv.stop() == 0, srv.log()


def test_get_check_and_load(served) -> None:  # type: ignore[no-untyped-def]
    srv, keys = served
    with client(srv, keys["readonly"]) as h:
        one = h.get("/v1/tariffs/1")
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["text"] == TARIFF and body["in_force"] is True
        assert body["sha256"] == hashlib.sha256(TARIFF.encode()).hexdigest()
        problem(h.get("/v1/tariffs/99"), 404)

        ok = h.post("/v1/tariffs/check", content=TARIFF.encode(),
                    params={"rating_groups": "default:100,single:7"})
        assert ok.status_code == 200 and ok.json()["valid"] is True, ok.text
        assert ok.json()["currency"] == "EUR" and "default" in ok.json()["plans"]
        missing = problem(h.post("/v1/tariffs/check", content=TARIFF.encode(),
                                 params={"rating_groups": "gold:100"}), 422)
        assert "gold" in missing["detail"], missing
        broken = TARIFF.replace('price = "0.01"', 'price = "lots"', 1)
        bad = problem(h.post("/v1/tariffs/check", content=broken.encode()), 422)
        assert "price" in bad["detail"] and ":" in bad["detail"], bad  # file:line and the key
        problem(h.post("/v1/tariffs/check", content=b"\xff\xfe"), 422)
        problem(h.post("/v1/tariffs/check", content=TARIFF.encode(),
                       params={"rating_groups": "no-colon"}), 422)
        assert [t["version"] for t in h.get("/v1/tariffs").json()] == [1]  # a check stores nothing
        problem(h.post("/v1/tariffs", content=TARIFF.encode()), 403)  # loading is admin's
    with client(srv, keys["admin"]) as h:
        newer = TARIFF.replace('price = "0.01"', 'price = "0.02"', 1)
        r = h.post("/v1/tariffs", content=newer.encode(), params={"source": "v2.toml"})
        assert r.status_code == 201 and r.json()["in_force"] == r.json()["version"], r.text
        two = h.get(f"/v1/tariffs/{r.json()['version']}").json()  # the very next request
        assert two["text"] == newer and two["in_force"] and two["source"] == "v2.toml"
        assert h.get("/v1/tariffs/1").json()["in_force"] is False
    with client(srv, keys["selfcare"]) as h:
        problem(h.get("/v1/tariffs/1"), 403)
        problem(h.post("/v1/tariffs/check", content=TARIFF.encode()), 403)
