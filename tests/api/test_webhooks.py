"""Webhooks from outside: the real `ocs serve`, a real receiver on 127.0.0.1 that checks every
signature, real HTTP and Diameter clients, the real CLI, kill -9.

An event is in the outbox when the change that caused it has returned: that is checked with no
wait (GET /v1/events right after). Delivery is asynchronous by nature: the receiver is waited
for, within a bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from gy_requests import ccr as gy_ccr
from server_harness import RunningServer, provision, start_server

from ocs.api.webhooks import SIGNATURE, sign, verify
from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import MSCCRequest, Units

ACCT = "491770000001"
SECRET = "whsec_test_secret_0123456789"


class Receiver:
    """An HTTP server on 127.0.0.1 that can be taken down and brought back on the same port."""

    def __init__(self, secret: str = SECRET, delay: float = 0.0) -> None:
        self.secret, self.delay = secret, delay
        self.got: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.up()

    def up(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if owner.delay:
                    time.sleep(owner.delay)
                ok = verify(owner.secret, self.headers.get(SIGNATURE, ""), body)
                with owner.lock:
                    if ok:
                        owner.got.append({**json.loads(body), "_header_id": self.headers["OCS-Event-Id"]})
                    else:
                        owner.bad_signatures += 1
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_a: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def ids(self, kind: str | None = None) -> list[str]:
        with self.lock:
            return [e["id"] for e in self.got if kind in (None, e["type"])]

    def wait_for(self, n: int, kind: str | None = None, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = set(self.ids(kind))
            if len(ids) >= n:
                return sorted(ids)
            time.sleep(0.05)
        raise AssertionError(f"{len(set(self.ids(kind)))} of {n} {kind or ''} events arrived: {self.got}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.down()


def ocs(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocs", *argv, "--data", str(data)],
                          capture_output=True, text=True, timeout=120)


def admin_key(data: Path) -> str:
    r = ocs(data, "apikey", "create", "--name", "admin", "--role", "admin")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def serve_one(tmp_path: Path, balance: str, *flags: str) -> tuple[RunningServer, Path, str]:
    """One account with `balance`, the server with its API, and an admin key for it."""
    data = tmp_path / "d"
    provision(data, {ACCT: {"balance": balance}})
    srv = start_server(data, "--api", "127.0.0.1:0", "--no-cdr-export", *flags)
    try:
        return srv, data, admin_key(data)
    except BaseException:
        srv.stop()
        raise


def api(srv: Any, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://{srv.api}", headers={"Authorization": f"Bearer {key}"},
                        timeout=30)


def events(c: httpx.Client, kind: str | None = None) -> list[dict[str, Any]]:
    params = {"limit": 1000, **({"type": kind} if kind else {})}
    r = c.get("/v1/events", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_the_signature_scheme() -> None:
    body = b'{"id":"evt_1"}'
    header = sign("k" * 20, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("k" * 20, header, body, now=1_700_000_100)
    assert not verify("k" * 20, header, body + b" ", now=1_700_000_100)  # another body
    assert not verify("x" * 20, header, body, now=1_700_000_100)          # another secret
    assert not verify("k" * 20, header, body, now=1_700_001_000)          # too old: a replay
    assert not verify("k" * 20, "garbage", body)


def test_bundle_amounts_are_money_strings_only_for_a_money_bundle() -> None:
    from ocs.api.webhooks import body
    event = {"id": "evt_1", "type": "bundle.exhausted", "at": 0, "account": ACCT}
    money = json.loads(body({**event, "data": {"unit": "money", "initial": 5_000_000, "remaining": 0}}))
    assert (money["data"]["initial"], money["data"]["remaining"]) == ("5.000000", "0.000000")
    units = json.loads(body({**event, "data": {"unit": "seconds", "initial": 600, "remaining": 0}}))
    assert (units["data"]["initial"], units["data"]["remaining"]) == (600, 0)


def test_changes_emit_signed_events_delivered_once_each(tmp_path: Path, receiver: Receiver) -> None:
    srv, data, key = serve_one(tmp_path, "5", "--webhook-retry", "0.2")
    try:
        with api(srv, key) as c:
            r = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"], "secret": SECRET})
            assert r.status_code == 201 and r.json()["secret"] == SECRET, r.text
            sub = r.json()["id"]
            assert [w["id"] for w in c.get("/v1/webhooks").json()] == [sub]
            assert "secret" not in c.get("/v1/webhooks").json()[0]
            r = c.post(f"/v1/accounts/{ACCT}/topups", json={"amount": "2.50"},
                       headers={"Idempotency-Key": "t-1"})
            assert r.status_code == 201, r.text
            got = events(c, "topup.applied")  # in the outbox the moment the top-up returned
            assert len(got) == 1 and got[0]["data"]["amount"] == "2.500000"
            assert got[0]["data"]["balance"] == "7.500000" and got[0]["account"] == ACCT
            r = c.post(f"/v1/accounts/{ACCT}/topups", json={"amount": "2.50"},
                       headers={"Idempotency-Key": "t-1"})  # a retry: answered, not applied again
            assert r.status_code == 201 and len(events(c, "topup.applied")) == 1
            for status in ("suspended", "active"):
                assert c.patch(f"/v1/accounts/{ACCT}", json={"status": status}).status_code == 200
            assert [e["type"] for e in events(c) if e["type"].startswith("account.")] == \
                ["account.suspended", "account.activated"]
        r = ocs(data, "tariff", "load", str(Path(__file__).parents[2] / "ocs/data/example-tariff.toml"))
        assert r.returncode == 0, r.stderr
        with api(srv, key) as c:
            assert [e["type"] for e in events(c, "tariff.activated")] == ["tariff.activated"]
        ids = receiver.wait_for(4)
        assert receiver.bad_signatures == 0
        assert len(receiver.ids()) == len(set(receiver.ids()))  # no repeats while all went well
        assert all(e["id"] == e["_header_id"] and e["id"].startswith("evt_") for e in receiver.got)
        assert len(ids) == 4
        log = ocs(data, "webhook", "deliveries", "--json")
        assert log.returncode == 0, log.stderr
        rows = json.loads(log.stdout)
        assert len(rows) == 4 and {r["state"] for r in rows} == {"delivered"}
        assert all(r["attempts"] == 1 and r["last_status"] == 200 for r in rows)
        with api(srv, key) as c:
            m = httpx.get(f"http://{srv.api}/metrics").text
            assert 'ocs_webhook_deliveries_total{outcome="delivered"} 4.0' in m, m
            assert "ocs_webhook_outbox_depth 0.0" in m
            assert 'ocs_api_requests_total{method="POST",role="admin",route="/v1/webhooks",status="201"} 1.0' in m
            assert c.delete(f"/v1/webhooks/{sub}").status_code == 200
            assert c.get("/v1/webhooks").json() == []
            assert c.delete(f"/v1/webhooks/{sub}").status_code == 404
    finally:
        assert srv.stop() == 0, srv.log()


async def test_balance_low_fires_once_per_crossing_and_a_topup_rearms_it(
        tmp_path: Path, receiver: Receiver) -> None:
    srv, data, key = serve_one(tmp_path, "1.00")
    client = await DiameterClient.connect(srv.host, srv.port)
    try:
        r = ocs(data, "webhook", "create", "--url", receiver.url, "--events",
                "balance.low,topup.applied", "--secret", SECRET)
        assert r.returncode == 0 and "wh_1" in r.stdout, r.stderr
        r = ocs(data, "webhook", "threshold", "--account", ACCT, "--low-balance", "0.50")
        assert r.returncode == 0, r.stderr
        bad = ocs(data, "webhook", "threshold", "--account", ACCT, "--low-balance", "lots")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

        n = 0

        async def spend(minutes: int) -> None:  # RG 100: 0.01 per 60 s, one session each
            nonlocal n
            n += 1
            sid = f"low-{n}"
            a = await client.ccr(gy_ccr(sid, 1, 0, ACCT, mscc=[
                MSCCRequest(rating_group=100, requested=Units(time=60 * minutes))]))
            assert a.result_code == C.DIAMETER_SUCCESS, a
            a = await client.ccr(gy_ccr(sid, 3, 1, ACCT, mscc=[
                MSCCRequest(rating_group=100, used=[Units(time=60 * minutes)])]))
            assert a.result_code == C.DIAMETER_SUCCESS, a

        with api(srv, key) as c:
            await spend(30)                        # 1.00 -> 0.70: above the threshold
            assert events(c, "balance.low") == []
            await spend(30)                        # 0.70 -> 0.40: crosses it
            low = events(c, "balance.low")
            assert len(low) == 1 and low[0]["data"]["balance"] == "0.400000"
            assert low[0]["data"]["threshold"] == "0.500000"
            await spend(10)                        # still below: no second event
            assert len(events(c, "balance.low")) == 1
            assert c.post(f"/v1/accounts/{ACCT}/topups", json={"amount": "0.05"},
                          headers={"Idempotency-Key": "small"}).status_code == 201
            await spend(5)                         # a top-up that stays below re-arms nothing
            assert len(events(c, "balance.low")) == 1
            assert c.post(f"/v1/accounts/{ACCT}/topups", json={"amount": "1"},
                          headers={"Idempotency-Key": "big"}).status_code == 201
            await spend(60)                        # 1.30 -> 0.70: re-armed, above
            assert len(events(c, "balance.low")) == 1
            await spend(30)                        # 0.70 -> 0.40: below again, fires again
            assert len(events(c, "balance.low")) == 2
        assert len(receiver.wait_for(2, "balance.low")) == 2
        assert len(receiver.wait_for(2, "topup.applied")) == 2
        assert receiver.bad_signatures == 0
    finally:
        await client.close()
        assert srv.stop() == 0, srv.log()


async def test_credit_limit_and_final_unit_events(tmp_path: Path) -> None:
    srv, _data, key = serve_one(tmp_path, "0.05")
    client = await DiameterClient.connect(srv.host, srv.port)
    try:
        a = await client.ccr(gy_ccr("fui-1", 1, 0, ACCT, mscc=[   # asks for 10 min, 5 can be paid
            MSCCRequest(rating_group=100, requested=Units(time=600))]))
        assert a.result_code == C.DIAMETER_SUCCESS and a.mscc[0].final_unit_action is not None, a
        a = await client.ccr(gy_ccr("fui-1", 2, 1, ACCT, mscc=[
            MSCCRequest(rating_group=100, used=[Units(time=300)], requested=Units(time=600))]))
        a = await client.ccr(gy_ccr("fui-2", 1, 0, ACCT, mscc=[   # nothing left
            MSCCRequest(rating_group=100, requested=Units(time=600))]))
        assert C.DIAMETER_CREDIT_LIMIT_REACHED in (a.result_code, *(m.result_code for m in a.mscc)), a
        a = await client.ccr(gy_ccr("fui-3", 1, 0, ACCT, mscc=[
            MSCCRequest(rating_group=100, requested=Units(time=600))]))
        with api(srv, key) as c:
            fui = events(c, "final_unit.granted")
            assert fui and fui[0]["data"]["session"] == "fui-1" and fui[0]["account"] == ACCT
            assert len(events(c, "credit.limit_reached")) == 1  # once, until money comes in
            assert c.post(f"/v1/accounts/{ACCT}/topups", json={"amount": "0.01"},
                          headers={"Idempotency-Key": "re"}).status_code == 201
        await client.ccr(gy_ccr("fui-4", 1, 0, ACCT, mscc=[
            MSCCRequest(rating_group=100, requested=Units(time=6000))]))
        a = await client.ccr(gy_ccr("fui-5", 1, 0, ACCT, mscc=[
            MSCCRequest(rating_group=100, requested=Units(time=600))]))
        with api(srv, key) as c:
            assert len(events(c, "credit.limit_reached")) == 2, events(c)
    finally:
        await client.close()
        assert srv.stop() == 0, srv.log()


async def test_bundle_threshold_and_exhausted_fire_once_each(tmp_path: Path) -> None:
    """A 600 s bundle drawn by one session: bundle.threshold when 80% is used (not at 50%),
    bundle.exhausted when none is left, each once; in the outbox when the CCA has come back."""
    srv, _data, key = serve_one(tmp_path, "0")
    client = await DiameterClient.connect(srv.host, srv.port)
    try:
        with api(srv, key) as c:
            r = c.post(f"/v1/accounts/{ACCT}/bundles",
                       json={"unit": "seconds", "amount": "600", "rating_groups": [100]})
            assert r.status_code == 201, r.text
            (b,) = c.get(f"/v1/accounts/{ACCT}/bundles").json()
            assert (b["initial"], b["remaining"]) == ("600", "600")
        steps = [(1, 0, None, 600), (2, 1, 300, 300), (2, 2, 200, 100), (3, 3, 100, None)]
        seen = []
        for rtype, number, used, ask in steps:
            a = await client.ccr(gy_ccr("bundle-1", rtype, number, ACCT, mscc=[MSCCRequest(
                rating_group=100, used=[Units(time=used)] if used else [],
                requested=Units(time=ask) if ask else None)]))
            assert a.result_code == C.DIAMETER_SUCCESS, a
            with api(srv, key) as c:
                seen.append((len(events(c, "bundle.threshold")), len(events(c, "bundle.exhausted"))))
        assert seen == [(0, 0), (0, 0), (1, 0), (1, 1)], seen
        with api(srv, key) as c:
            (threshold,) = events(c, "bundle.threshold")
            assert threshold["account"] == ACCT and threshold["data"]["percent_used"] == 83
            assert threshold["data"]["initial"] == 600 and threshold["data"]["remaining"] == 100
            assert events(c, "bundle.exhausted")[0]["data"]["remaining"] == 0
    finally:
        await client.close()
        assert srv.stop() == 0, srv.log()


def _topups(srv: Any, key: str, n: int, prefix: str) -> None:
    with api(srv, key) as c:
        for i in range(n):
            r = c.post(f"/v1/accounts/{ACCT}/topups", json={"amount": "0.01"},
                       headers={"Idempotency-Key": f"{prefix}-{i}"})
            assert r.status_code == 201, r.text


def test_a_receiver_down_for_30_s_gets_every_event_after(tmp_path: Path, receiver: Receiver) -> None:
    srv, data, key = serve_one(tmp_path, "1", "--webhook-retry", "1")
    try:
        r = ocs(data, "webhook", "create", "--url", receiver.url, "--events", "topup.applied",
                "--secret", SECRET)
        assert r.returncode == 0, r.stderr
        receiver.down()
        started = time.monotonic()
        deadline = started + 30
        n = 0
        while time.monotonic() < deadline and n < 60:  # events spread over the 30 s outage
            _topups(srv, key, 1, f"down-{n}")
            n += 1
            time.sleep(0.5)
        time.sleep(max(0.0, deadline - time.monotonic()))
        pending = json.loads(ocs(data, "webhook", "deliveries", "--state", "pending", "--json").stdout)
        assert len(pending) == n and all(p["attempts"] >= 1 for p in pending)
        assert max(p["attempts"] for p in pending) >= 3  # retried with backoff meanwhile
        receiver.up()
        ids = receiver.wait_for(n, timeout=60)
        assert len(ids) == n and receiver.bad_signatures == 0
        print(f"{n} events during a 30 s outage: all delivered "
              f"{time.monotonic() - deadline:.1f} s after the receiver came back")
    finally:
        assert srv.stop() == 0, srv.log()


def test_kill_9_with_events_in_the_outbox_delivers_them_after_restart(
        tmp_path: Path, receiver: Receiver) -> None:
    srv, data, key = serve_one(tmp_path, "1", "--webhook-retry", "0.2")
    try:
        assert ocs(data, "webhook", "create", "--url", receiver.url, "--events", "topup.applied",
                   "--secret", SECRET).returncode == 0
        receiver.down()
        _topups(srv, key, 10, "k9")
    finally:
        srv.kill()
    api_pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"ocs.api.process --data {data}"],
                                               capture_output=True, text=True).stdout.split()]
    for pid in api_pids:  # died with its parent (PR_SET_PDEATHSIG), or is stopped by its pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
    receiver.up()
    srv = start_server(data, "--no-api", "--no-cdr-export", "--webhook-retry", "0.2")
    try:  # --no-api: the worker runs all the same
        ids = receiver.wait_for(10, timeout=60)
        assert len(ids) == 10 and receiver.bad_signatures == 0
    finally:
        assert srv.stop() == 0, srv.log()


async def test_a_slow_receiver_never_slows_charging(tmp_path: Path) -> None:
    slow = Receiver(delay=3.0)
    srv, data, key = serve_one(tmp_path, "100")
    client = await DiameterClient.connect(srv.host, srv.port)
    try:
        assert ocs(data, "webhook", "create", "--url", slow.url, "--events", "*",
                   "--secret", SECRET).returncode == 0
        _topups(srv, key, 20, "slow")  # 20 POSTs, each held 3 s by the receiver
        worst = 0.0
        for i in range(50):
            t = time.perf_counter()
            a = await client.ccr(gy_ccr(f"slow-{i}", 1, 0, ACCT, mscc=[
                MSCCRequest(rating_group=100, requested=Units(time=60))]))
            worst = max(worst, time.perf_counter() - t)
            assert a.result_code == C.DIAMETER_SUCCESS
        assert worst < 1.0, worst
        assert len(slow.wait_for(20, "topup.applied", timeout=30)) == 20
    finally:
        await client.close()
        assert srv.stop() == 0, srv.log()
        slow.down()


def test_bad_subscriptions_are_refused_and_change_nothing(tmp_path: Path) -> None:
    srv, data, key = serve_one(tmp_path, "1")
    try:
        with api(srv, key) as c:
            for body in ({"url": "ftp://127.0.0.1/x", "events": ["*"]},
                         {"url": "http://127.0.0.1:1/x", "events": ["no.such"]},
                         {"url": "http://127.0.0.1:1/x", "events": []},
                         {"url": "http://127.0.0.1:1/x", "events": ["*"], "secret": "short"}):
                r = c.post("/v1/webhooks", json=body)
                assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
            assert c.get("/v1/webhooks").json() == []
        for argv in (("--url", "nope", "--events", "*"),
                     ("--url", "http://127.0.0.1:1/", "--events", "bogus")):
            r = ocs(data, "webhook", "create", *argv)
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert json.loads(ocs(data, "webhook", "list", "--json").stdout) == []
    finally:
        assert srv.stop() == 0, srv.log()
