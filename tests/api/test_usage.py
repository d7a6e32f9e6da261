"""Sessions and usage over HTTP, from outside: the real `ocs serve --api`, a real Diameter client
making the sessions and CDRs, httpx reading them back. Each effect is checked by the very next
request (a CCR, a GET), with no sleep."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from gy_requests import ccr as gy_ccr
from gy_requests import new_session_id
from server_harness import provision, start_server
from test_api import client, new_key, problem

from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import MSCCRequest, Units

A, B = "491790000001", "491790000002"


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("usage") / "d"
    provision(data, {A: {"balance": "50"}, B: {"balance": "50"}})
    srv = start_server(data, "--api", "127.0.0.1:0", "--no-cdr-export", "--api-rate-limit", "0")
    keys = {role: new_key(data, f"u-{role}", role) for role in ("admin", "crm", "billing")}
    keys["selfcare"] = new_key(data, "u-self", "selfcare", "--account", A)
    yield srv, keys
    assert srv.stop() == 0, srv.log()


async def open_session(c: DiameterClient, acct: str, seconds: int = 60) -> str:
    sid = new_session_id()
    a = await c.ccr(gy_ccr(sid, 1, 0, acct, mscc=[MSCCRequest(rating_group=100,
                                                                requested=Units(time=seconds))]))
    assert a.result_code == C.DIAMETER_SUCCESS and a.mscc[0].granted, a
    return sid


async def full_session(c: DiameterClient, acct: str, used: tuple[int, int]) -> str:
    sid = await open_session(c, acct)
    a = await c.ccr(gy_ccr(sid, 2, 1, acct, mscc=[MSCCRequest(
        rating_group=100, requested=Units(time=60), used=[Units(time=used[0])])]))
    assert a.result_code == C.DIAMETER_SUCCESS, a
    a = await c.ccr(gy_ccr(sid, 3, 2, acct, mscc=[MSCCRequest(rating_group=100,
                                                                used=[Units(time=used[1])])]))
    assert a.result_code == C.DIAMETER_SUCCESS, a
    return sid


def money(text: str) -> Decimal:
    return Decimal(text)


async def test_list_and_abort_sessions(served) -> None:  # type: ignore[no-untyped-def]
    srv, keys = served
    c = await DiameterClient.connect(srv.host, srv.port)
    try:
        mine = {await open_session(c, A), await open_session(c, A)}
        theirs = await open_session(c, B)
        with client(srv, keys["crm"]) as h:
            before = h.get(f"/v1/accounts/{A}/balance").json()
            r = h.get(f"/v1/accounts/{A}/sessions")
            assert r.status_code == 200, r.text
            listed = {s["id"]: s for s in r.json()["items"]}
            assert mine <= set(listed) and theirs not in listed
            assert all(s["account"] == A for s in listed.values())
            one = sorted(mine)[0]
            assert listed[one]["groups"][0]["rating_group"] == 100
            assert listed[one]["groups"][0]["granted_units"] > 0
            paged = h.get(f"/v1/accounts/{A}/sessions", params={"limit": 1}).json()
            assert len(paged["items"]) == 1 and paged["next_cursor"] is not None
            rest = h.get(f"/v1/accounts/{A}/sessions",
                         params={"cursor": paged["next_cursor"]}).json()["items"]
            assert {s["id"] for s in [*paged["items"], *rest]} == set(listed)

            r = h.post(f"/v1/sessions/{one}/abort")
            assert r.status_code == 202, r.text
            assert r.json()["id"] == one and r.json()["aborted_at"]
            # In force for the very next request: the gateway's next CCR-U is refused, 5002.
            a = await c.ccr(gy_ccr(one, 2, 1, A, mscc=[MSCCRequest(rating_group=100,
                                                                     used=[Units(time=10)])]))
            assert a.result_code == C.DIAMETER_UNKNOWN_SESSION_ID, a
            after = h.get(f"/v1/accounts/{A}/balance").json()
            assert money(after["reserved"]) < money(before["reserved"])  # its hold is released
            ids = {s["id"] for s in h.get(f"/v1/accounts/{A}/sessions").json()["items"]}
            assert one not in ids and (mine - {one}) <= ids
            problem(h.post(f"/v1/sessions/{one}/abort"), 409)
            problem(h.post("/v1/sessions/no;such;session/abort"), 404)
            problem(h.get("/v1/accounts/499999999999/sessions"), 404)
        with client(srv, keys["billing"]) as h:
            problem(h.post(f"/v1/sessions/{theirs}/abort"), 403)  # billing reads, never ends
        with client(srv, keys["selfcare"]) as h:
            assert h.get(f"/v1/accounts/{A}/sessions").status_code == 200
            problem(h.get(f"/v1/accounts/{B}/sessions"), 403)
        with client(srv, keys["admin"]) as h:
            entries = h.get("/v1/audit", params={"limit": 1000}).json()["items"]
            aborts = [e for e in entries if e["command"] == "session.abort"]
            assert len(aborts) == 1 and aborts[0]["actor"] == "key:u-crm", aborts
    finally:
        await c.close()


async def test_cdrs_paged_streamed_and_summed(served) -> None:  # type: ignore[no-untyped-def]
    srv, keys = served
    c = await DiameterClient.connect(srv.host, srv.port)
    try:
        with client(srv, keys["billing"]) as h:
            start = h.get(f"/v1/accounts/{A}/balance").json()["balance"]
        sids_a = [await full_session(c, A, (30 + i, 61 + i)) for i in range(5)]
        sid_b = await full_session(c, B, (10, 10))
    finally:
        await c.close()
    with client(srv, keys["billing"]) as h:
        got: list[dict[str, Any]] = []
        cursor = 0
        for _ in range(50):  # pages of 2, following the cursor
            r = h.get("/v1/cdrs", params={"account": A, "limit": 2, "cursor": cursor})
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["items"]) <= 2
            got += page["items"]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert all(x["account_id"] == A for x in got)
        assert {x["session_id"] for x in got} >= set(sids_a)
        assert len({x["cdr_id"] for x in got}) == len(got)  # no CDR twice across pages
        assert sid_b not in {x["session_id"] for x in got}

        one = h.get("/v1/cdrs", params={"session": sids_a[0]}).json()["items"]
        assert [x["session_id"] for x in one] == [sids_a[0]]
        assert one[0]["used_units"] == 30 + 61 and one[0]["termination_cause"] == "NORMAL"

        with h.stream("GET", "/v1/cdrs/stream") as s:
            assert s.status_code == 200 and s.headers["content-type"] == "application/x-ndjson"
            streamed = [json.loads(line) for line in s.iter_lines() if line]
        assert {x["cdr_id"] for x in got} <= {x["cdr_id"] for x in streamed}
        assert sid_b in {x["session_id"] for x in streamed}
        with h.stream("GET", "/v1/cdrs/stream", params={"since": "2999-01-01T00:00:00Z"}) as s:
            assert s.status_code == 200 and not [line for line in s.iter_lines() if line]

        summary = h.get(f"/v1/accounts/{A}/usage").json()
        (group,) = summary["groups"]
        assert group["rating_group"] == 100 and group["unit"] == "seconds"
        assert group["cdrs"] == len(got)
        assert group["used_units"] == sum(x["used_units"] for x in got)
        assert money(group["amount"]) == sum(money(x["amount"]) for x in got)
        end = h.get(f"/v1/accounts/{A}/balance").json()["balance"]
        mine = [x for x in got if x["session_id"] in sids_a]
        assert money(start) - money(end) == sum(money(x["amount"]) for x in mine)  # what was paid
        assert h.get(f"/v1/accounts/{A}/usage",
                     params={"until": "2000-01-01T00:00:00Z"}).json()["groups"] == []
        problem(h.get(f"/v1/accounts/{A}/usage", params={"since": "yesterday"}), 422)
        problem(h.get(f"/v1/accounts/{A}/usage", params={"since": "2030-01-01T00:00:00Z",
                                                        "until": "2029-01-01T00:00:00Z"}), 422)
        problem(h.get("/v1/cdrs", params={"account": "499999999999"}), 404)
    with client(srv, keys["crm"]) as h:
        problem(h.get("/v1/cdrs", params={"account": A}), 403)  # crm: balances, not usage
    with client(srv, keys["selfcare"]) as h:
        assert h.get("/v1/cdrs", params={"account": A}).status_code == 200
        assert h.get(f"/v1/accounts/{A}/usage").status_code == 200
        problem(h.get("/v1/cdrs", params={"account": B}), 403)
        problem(h.get("/v1/cdrs"), 403)  # every account's CDRs: not for a selfcare key
        with h.stream("GET", "/v1/cdrs/stream", params={"account": B}) as s:
            assert s.status_code == 403


def test_unauthenticated_usage_is_401(served) -> None:  # type: ignore[no-untyped-def]
    srv, _keys = served
    with httpx.Client(base_url=f"http://{srv.api}", timeout=30) as h:
        for path in ("/v1/cdrs", "/v1/cdrs/stream", f"/v1/accounts/{A}/usage",
                     f"/v1/accounts/{A}/sessions"):
            problem(h.get(path), 401)
        problem(h.post("/v1/sessions/x;1;2/abort"), 401)


async def test_the_command_line_lists_aborts_and_sums(served) -> None:  # type: ignore[no-untyped-def]
    from test_api import ocs
    srv, _keys = served
    c = await DiameterClient.connect(srv.host, srv.port)
    try:
        sid = await open_session(c, B)
        listed = ocs(srv.data, "session", "list", B, "--json")
        assert listed.returncode == 0, listed.stderr
        assert sid in {json.loads(line)["id"] for line in listed.stdout.splitlines()}
        done = ocs(srv.data, "session", "abort", sid)
        assert done.returncode == 0 and sid in done.stdout, done.stderr
        a = await c.ccr(gy_ccr(sid, 2, 1, B, mscc=[MSCCRequest(rating_group=100,
                                                                 used=[Units(time=5)])]))
        assert a.result_code == C.DIAMETER_UNKNOWN_SESSION_ID, a
        again = ocs(srv.data, "session", "abort", sid)
        assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    finally:
        await c.close()
    table = ocs(srv.data, "usage", B)
    assert table.returncode == 0 and "seconds" in table.stdout, table.stderr
    rows = ocs(srv.data, "usage", B, "--cdrs")
    assert rows.returncode == 0, rows.stderr
    assert all(json.loads(line)["account_id"] == B for line in rows.stdout.splitlines())
    for argv in (["usage", B, "--since", "junk"], ["usage", "499999999999"],
                 ["usage", B, "--since", "2030-01-01", "--until", "2029-01-01"]):
        bad = ocs(srv.data, *argv)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, (argv, bad.stderr)


def test_the_api_cdr_has_the_record_columns() -> None:
    """The API's CDR shape is written out for its OpenAPI document (the API process loads no
    billing code); it must name the columns of the one CDR record, in its order."""
    from ocs.api.models import Cdr
    from ocs.billing.cdr.record import COLUMNS
    assert tuple(Cdr.model_fields) == COLUMNS
