"""Sessions across time and crashes: stale sweep, SIGKILL mid-session, and a tshark-checked capture."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import account, provision, serving, start_server

from balance.money import to_micro
from balance.store import open_store
from ocs.billing import cdr as cdrs
from ocs.client import DiameterClient
from protocol.records import CCR, MSCCRequest, Units


def a_ccr(sid: str, msisdn: str, rtype: int, number: int, mscc: list[MSCCRequest]) -> CCR:
    return CCR(session_id=sid, origin_host="client.test", origin_realm="test", destination_realm="test", service_context_id="32251@3gpp.org",
               request_type=rtype, request_number=number, subscription_ids=[(0, msisdn)], mscc=mscc)


def stored_cdrs(data: Path) -> list[cdrs.CDR]:
    store = open_store(data)
    try:
        with store.read() as view:
            return list(cdrs.iter_from(view.txn, store.db("cdrs")))
    finally:
        store.close()


async def test_stale_session_swept(tmp_path: Path) -> None:
    data = tmp_path / "d"
    provision(data, {"491720000001": {"balance": "10"}})
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("sweep_interval = 0.3\ncdr_export = false\n")
    srv = start_server(data, "--config", str(cfg), "--session-timeout", "2")
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        sid = "pgw;stale;1"
        await c.ccr(a_ccr(sid, "491720000001", 1, 0, [MSCCRequest(rating_group=100, requested=Units(time=600))]))
        await c.ccr(a_ccr(sid, "491720000001", 2, 1, [MSCCRequest(rating_group=100, requested=Units(time=600),
                                                                  used=[Units(time=90)])]))
        assert account(data, "491720000001").reserved > 0
        for _ in range(100):  # the gateway went silent; within ~3 s the sweeper closes the session
            await asyncio.sleep(0.1)
            if account(data, "491720000001").reserved == 0:
                break
        acc = account(data, "491720000001")
        assert acc.reserved == 0 and acc.balance == to_micro("10") - to_micro("0.02")
        [record] = [r for r in stored_cdrs(data) if r.session_id == sid]
        assert record.termination_cause == "STALE" and record.used_units == 90 and record.amount == to_micro("0.02")
        # a late update for the swept session is refused
        a = await c.ccr(a_ccr(sid, "491720000001", 2, 2, [MSCCRequest(rating_group=100, used=[Units(time=10)])]))
        assert a.result_code == 5002
        await c.close()
    finally:
        assert srv.stop() == 0


async def test_sweeper_expires_bundles(tmp_path: Path) -> None:
    import time
    data = tmp_path / "d"
    provision(data, {"491720000009": {"balance": "1", "bundles": [
        {"unit": "seconds", "amount": 600, "expires": int(time.time()) + 2}]}})
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("sweep_interval = 0.3\ncdr_export = false\n")
    srv = start_server(data, "--config", str(cfg))
    try:
        store = open_store(data)
        try:
            for _ in range(80):
                await asyncio.sleep(0.1)
                with store.read() as view:
                    if not view.bundles("491720000009"):
                        break
            with store.read() as view:
                assert view.bundles("491720000009") == []
                kinds = [e.kind for e in view.ledger("491720000009")]
            assert "expiry" in kinds
        finally:
            store.close()
    finally:
        assert srv.stop() == 0


async def test_restart_after_sigkill_mid_session(tmp_path: Path) -> None:
    data = tmp_path / "d"
    start_balance = to_micro("10")
    provision(data, {"491720000002": {"balance": "10"}})
    srv = start_server(data, "--no-cdr-export")
    c = await DiameterClient.connect(srv.host, srv.port)
    sids = [f"pgw;restart;{i}" for i in range(6)]
    for sid in sids:
        a = await c.ccr(a_ccr(sid, "491720000002", 1, 0, [MSCCRequest(rating_group=100, requested=Units(time=120))]))
        assert a.result_code == 2001
        a = await c.ccr(a_ccr(sid, "491720000002", 2, 1, [MSCCRequest(rating_group=100, requested=Units(time=120),
                                                                      used=[Units(time=61)])]))
        assert a.result_code == 2001
    srv.kill()  # SIGKILL: no flush, no goodbye
    await c.close()
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("sweep_interval = 0.3\ncdr_export = false\n")
    srv = start_server(data, "--config", str(cfg), "--session-timeout", "3")
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        # half the sessions continue after the restart and terminate normally ...
        for sid in sids[:3]:
            a = await c.ccr(a_ccr(sid, "491720000002", 3, 2, [MSCCRequest(rating_group=100, used=[Units(time=30)])]))
            assert a.result_code == 2001
        # ... the others are never heard of again and get swept
        for _ in range(100):
            await asyncio.sleep(0.1)
            if account(data, "491720000002").reserved == 0:
                break
        acc = account(data, "491720000002")
        records = [r for r in stored_cdrs(data) if r.session_id in sids]
        assert acc.reserved == 0
        assert len(records) == 6
        assert {r.termination_cause for r in records} == {"NORMAL", "STALE"}
        # conservation: balance + what the CDRs charged + what is held == where we started
        assert acc.balance + sum(r.amount for r in records) + acc.reserved == start_balance
        assert sum(r.amount for r in records) == 3 * to_micro("0.02") + 3 * to_micro("0.02")
        await c.close()
    finally:
        assert srv.stop() == 0


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (.ci/run installs it)")
async def test_tshark_dissects_a_captured_session(tmp_path: Path) -> None:
    from pcap import write_pcap
    data = tmp_path / "d"
    provision(data, {"491720000003": {"balance": "10"}})
    srv = start_server(data, "--no-cdr-export")
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        flows: list[tuple[bool, bytes]] = []
        sent = []
        orig_request_raw = c.request_raw

        async def recording(frame: bytes, timeout: float = 10.0) -> bytes:
            sent.append(frame)
            answer = await orig_request_raw(frame, timeout)
            flows.append((True, frame))
            flows.append((False, answer))
            return answer

        c.request_raw = recording  # type: ignore[method-assign]  # wraps the client's method to record
        await c.watchdog()
        sid = "pgw;tshark;1"
        await c.ccr(a_ccr(sid, "491720000003", 1, 0, [MSCCRequest(rating_group=100, requested=Units(time=60)),
                                                      MSCCRequest(rating_group=200, requested=Units(total_octets=1000))]))
        await c.ccr(a_ccr(sid, "491720000003", 2, 1, [MSCCRequest(rating_group=100, requested=Units(time=60),
                                                                  used=[Units(time=60, reporting_reason=3)])]))
        await c.ccr(a_ccr(sid, "491720000003", 3, 2, [MSCCRequest(rating_group=100, used=[Units(time=10)]),
                                                      MSCCRequest(rating_group=200, used=[Units(total_octets=900)])]))
        await c.close()
    finally:
        assert srv.stop() == 0
    pcap = tmp_path / "session.pcap"
    write_pcap(pcap, flows)
    out = subprocess.run(["tshark", "-r", str(pcap), "-o", "tcp.check_checksum:FALSE", "-d",
                          "tcp.port==3868,diameter", "-T", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    packets = json.loads(out.stdout)
    assert len(packets) == len(flows)
    text = out.stdout
    assert "_ws.malformed" not in text
    assert '"_ws.expert.severity": "8388608"' not in text  # error
    assert '"_ws.expert.severity": "6291456"' not in text  # warning
    codes = [p["_source"]["layers"]["diameter"]["diameter.cmd.code"] for p in packets]
    assert codes == ["280", "280", "272", "272", "272", "272", "272", "272"]


async def test_engine_death_stops_the_front_with_exit_1(tmp_path: Path) -> None:
    import os
    import signal
    data = tmp_path / "d"
    provision(data, {"491720000010": {"balance": "10"}})
    srv = start_server(data, "--no-cdr-export")
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        a = await c.ccr(a_ccr("pgw;engine;1", "491720000010", 1, 0, [MSCCRequest(rating_group=100, requested=Units(time=60))]))
        assert a.result_code == 2001
        os.kill(srv.engine_pid(), signal.SIGKILL)
        assert await asyncio.to_thread(srv.proc.wait, 20) == 1  # it does not go on without its engine
        log = srv.log()
        assert "charging engine went away" in log and "Traceback" not in log  # a clean shutdown
        await c.close()
    finally:
        srv.stop()


async def test_error_answer_carries_proxy_info_once(tmp_path: Path) -> None:
    from test_server_peers import _drop_avp

    from protocol import build as B
    from protocol.ccr import encode_ccr
    from protocol.message import decode_message
    async with serving(tmp_path / "d", {"491720000011": {"balance": "10"}}, "--no-cdr-export") as (_srv, c):
        proxy = B.group(284, B.utf8(280, "dra1.test") + B.octets(33, b"state-9"))
        req = a_ccr("pgw;proxy;1", "491720000011", 1, 0, [MSCCRequest(rating_group=100, requested=Units(time=60))])
        frame = _drop_avp(encode_ccr(req, *c.next_ids(), extra_avps=proxy), 415)  # no CC-Request-Number
        answer = decode_message(await c.request_raw(frame))
        assert answer.find("Result-Code").value == 5005
        assert len(answer.find_all("Proxy-Info")) == 1


async def test_new_tariff_version_used_without_restart(tmp_path: Path) -> None:
    from server_harness import TARIFF

    from rating.tariff_store import TariffStore
    data = tmp_path / "d"
    async with serving(data, {"491720000012": {"balance": "10"}}, "--no-cdr-export") as (_srv, c):

        async def sms() -> int:
            before = account(data, "491720000012").balance
            a = await c.ccr(a_ccr(f"smsc;{before}", "491720000012", 4, 0,
                                  [MSCCRequest(rating_group=300, requested=Units(service_specific_units=1))]))
            assert a.result_code == 2001
            return before - account(data, "491720000012").balance

        assert await sms() == to_micro("0.05")
        store = open_store(data)
        try:  # the operator loads a new price list while the server runs
            TariffStore(store).load(TARIFF.replace('price = "0.05"', 'price = "0.07"'), "new.toml")
        finally:
            store.close()
        for _ in range(50):  # picked up within about a second, no restart
            await asyncio.sleep(0.1)
            if await sms() == to_micro("0.07"):
                break
        else:
            raise AssertionError("the new tariff version was not used")


def _children(pid: int) -> list[int]:
    out = []
    import os
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of `ocs serve --workers 2`: its workers (and their engines) stop too, instead of
    serving on, out of reach of any later SIGTERM."""
    import os
    import signal
    import time
    provision(tmp_path / "d", {"491750000001": {"balance": "1"}})
    srv = start_server(tmp_path / "d", "--workers", "2", "--no-cdr-export")
    workers = [p for p in _children(srv.proc.pid) if _alive(p)]
    engines = [e for w in workers for e in _children(w)]
    assert len(workers) >= 2 and len(engines) >= 2
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in workers + engines):
        await asyncio.sleep(0.2)
    left = [p for p in workers + engines if _alive(p)]
    for p in left:  # never leave them behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert left == []


async def test_readiness_probe_ready_then_draining(tmp_path: Path) -> None:
    """/readyz on the metrics address: 200 while the server charges; 503 naming the reason once
    SIGTERM has started the drain (a request held in flight by a stopped engine keeps it draining);
    /livez 200; only GET and HEAD, anything else a problem+json 405; /metrics is unchanged."""
    import os
    import signal
    import time
    import urllib.request

    from probes import free_port, probe

    data = tmp_path / "d"
    provision(data, {"491720000011": {"balance": "10"}})
    port = free_port()
    srv = start_server(data, "--no-cdr-export", "--metrics", f"127.0.0.1:{port}")
    engine = None
    try:
        status, ctype, body = await asyncio.to_thread(probe, port)
        assert (status, ctype) == (200, "application/json"), (status, body)
        assert body == {"status": "ready", "store": "writable", "cdr_export": "ok", "reasons": []}
        assert (await asyncio.to_thread(probe, port, "/livez"))[:2] == (200, "application/json")
        status, _, head = await asyncio.to_thread(probe, port, "/readyz", "HEAD")
        assert (status, head) == (200, {})
        status, ctype, problem = await asyncio.to_thread(probe, port, "/readyz", "POST")
        assert (status, ctype, problem["status"]) == (405, "application/problem+json", 405), problem
        text = (await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()))
        assert b"ocs_store_degraded" in text

        c = await DiameterClient.connect(srv.host, srv.port)
        first = await c.ccr(a_ccr("pgw;ready;1", "491720000011", 1, 0,
                                  [MSCCRequest(rating_group=100, requested=Units(time=60))]))
        assert first.result_code == 2001
        engine = srv.engine_pid()
        os.kill(engine, signal.SIGSTOP)  # the next request stays in flight
        held = asyncio.ensure_future(c.ccr(a_ccr("pgw;ready;1", "491720000011", 3, 1, [
            MSCCRequest(rating_group=100, used=[Units(time=30)])])))
        await asyncio.sleep(0.3)  # the request reaches the front (not a wait for a state change)
        os.kill(srv.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # a signal is handled when the loop gets to it
        while True:
            status, _, body = await asyncio.to_thread(probe, port)
            if status == 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status == 503 and body["status"] == "not ready", body
        assert any(r.startswith("shutting down") for r in body["reasons"]), body
        os.kill(engine, signal.SIGCONT)
        engine = None
        done = await asyncio.wait_for(held, 20)
        assert done.result_code == 2001  # the drain answers what it holds
        assert await asyncio.to_thread(srv.proc.wait, 30) == 0
        await c.close()
    finally:
        if engine is not None:
            os.kill(engine, signal.SIGCONT)
        srv.stop()


async def test_workers_each_serve_their_own_metrics_and_probes(tmp_path: Path) -> None:
    """`--workers 2 --metrics HOST:0`: each worker serves /metrics and /readyz on its own port (the
    ready line names both), a CCR is counted by exactly one of them; a fixed PORT gives PORT+i, and
    one that would run past 65535 is refused with one line and exit 2."""
    import urllib.request

    from probes import free_port, probe

    data = tmp_path / "d"
    provision(data, {"491720000021": {"balance": "10"}})
    srv = start_server(data, "--workers", "2", "--no-cdr-export", "--metrics", "127.0.0.1:0")
    try:
        served = next(a for a in srv.addresses if a.startswith("metrics=")).removeprefix("metrics=")
        ports = [int(a.rpartition(":")[2]) for a in served.split(",")]
        assert len(ports) == 2 and len(set(ports)) == 2 and 0 not in ports, srv.addresses
        for port in ports:
            status, _, body = await asyncio.to_thread(probe, port)
            assert (status, body["status"]) == (200, "ready"), (port, body)
        c = await DiameterClient.connect(srv.host, srv.port)
        a = await c.ccr(a_ccr("pgw;workers-metrics;1", "491720000021", 1, 0,
                              [MSCCRequest(rating_group=100, requested=Units(time=60))]))
        assert a.result_code == 2001
        await c.close()

        def counted(port: int) -> float:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            return sum(float(line.rpartition(b" ")[2]) for line in body.splitlines()
                       if line.startswith(b"ocs_requests_total{") and b'command="CCR"' in line)
        assert sorted([await asyncio.to_thread(counted, p) for p in ports]) == [0.0, 1.0]
    finally:
        assert srv.stop() == 0

    fixed = free_port()
    srv = start_server(data, "--workers", "2", "--no-cdr-export", "--metrics", f"127.0.0.1:{fixed}")
    try:
        assert f"metrics=127.0.0.1:{fixed},127.0.0.1:{fixed + 1}" in srv.addresses, srv.addresses
    finally:
        assert srv.stop() == 0
    r = subprocess.run([sys.executable, "-m", "ocs", "serve", "--data", str(data), "--workers", "2",
                        "--metrics", "127.0.0.1:65535"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "65535..65536" in r.stderr, r.stderr
