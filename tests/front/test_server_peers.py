"""Peer handling (RFC 6733 §5) and protocol errors against the real server."""

from __future__ import annotations

import asyncio
import struct
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import RunningServer, provision, start_server

from ocs.client import DiameterClient
from protocol import constants as C
from protocol.base import decode_cea, encode_cer
from protocol.ccr import encode_ccr
from protocol.header import decode_header
from protocol.message import decode_message
from protocol.records import CCR, CER, MSCCRequest, Units

ACCOUNTS = {"491710000001": {"balance": "100"}, "491710000002": {"balance": "100"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("peers") / "data"
    provision(data, ACCOUNTS)
    srv = start_server(data, "--metrics", "127.0.0.1:19187")
    yield srv
    assert srv.stop() == 0, srv.log()


def result_code(frame: bytes) -> int:
    from ocs.front.dispatch import result_code_of
    return result_code_of(frame)


def a_ccr(sid: str, msisdn: str = "491710000001", rtype: int = 1, number: int = 0) -> CCR:
    return CCR(session_id=sid, origin_host="client.test", origin_realm="test", destination_realm="test",
               service_context_id="32251@3gpp.org", request_type=rtype, request_number=number,
               subscription_ids=[(0, msisdn)],
               mscc=[MSCCRequest(rating_group=100, requested=Units(time=60))])


async def test_cea_advertises_credit_control(server: RunningServer) -> None:
    c = await DiameterClient.connect(server.host, server.port, cer=False)
    cea = await c.capabilities_exchange()
    assert cea.result_code == C.DIAMETER_SUCCESS
    assert cea.origin_host == "ocs.test" and cea.origin_realm == "test"
    assert C.APP_CREDIT_CONTROL in cea.auth_application_ids
    assert (C.VENDOR_3GPP, C.APP_CREDIT_CONTROL, None) in cea.vendor_specific_application_ids
    assert cea.host_ip_addresses == ["127.0.0.1"] and cea.product_name
    await c.close()


async def test_relay_agent_accepted(server: RunningServer) -> None:
    c = await DiameterClient.connect(server.host, server.port, cer=False)
    cea = await c.capabilities_exchange(CER(origin_host="dra.test", origin_realm="test",
                                            host_ip_addresses=["127.0.0.1"], product_name="freeDiameter",
                                            auth_application_ids=[C.APP_RELAY]))
    assert cea.result_code == C.DIAMETER_SUCCESS
    a = await c.ccr(a_ccr("dra.test;1;1"))
    assert a.result_code == C.DIAMETER_SUCCESS
    await c.close()


async def test_no_common_application(server: RunningServer) -> None:
    c = await DiameterClient.connect(server.host, server.port, cer=False)
    cea = await c.capabilities_exchange(CER(origin_host="s6a.test", origin_realm="test",
                                            host_ip_addresses=["127.0.0.1"], auth_application_ids=[16777251]))
    assert cea.result_code == C.DIAMETER_NO_COMMON_APPLICATION
    await asyncio.wait_for(c.closed.wait(), 5)
    await c.close()


async def test_request_before_cer_refused(server: RunningServer) -> None:
    c = await DiameterClient.connect(server.host, server.port, cer=False)
    answer = await c.request_raw(encode_ccr(a_ccr("early;1;1"), *c.next_ids()))
    assert result_code(answer) == C.DIAMETER_UNKNOWN_PEER
    assert decode_header(answer).is_error
    await asyncio.wait_for(c.closed.wait(), 5)
    await c.close()


async def test_watchdog_unknown_command_wrong_application(server: RunningServer) -> None:
    c = await DiameterClient.connect(server.host, server.port)
    dwa = await c.watchdog()
    assert result_code(dwa) == C.DIAMETER_SUCCESS and decode_header(dwa).command_code == C.CC_DEVICE_WATCHDOG
    # an ASR-like request we do not serve: 3001 with the E bit
    frame = bytearray(encode_ccr(a_ccr("x;1;1"), *c.next_ids()))
    frame[5:8] = (999).to_bytes(3, "big")
    answer = await c.request_raw(bytes(frame))
    assert result_code(answer) == C.DIAMETER_COMMAND_UNSUPPORTED and decode_header(answer).is_error
    # a CCR for another application id: 3007
    frame = bytearray(encode_ccr(a_ccr("x;1;2"), *c.next_ids()))
    frame[8:12] = (16777238).to_bytes(4, "big")
    answer = await c.request_raw(bytes(frame))
    assert result_code(answer) == C.DIAMETER_APPLICATION_UNSUPPORTED
    # a CCR missing its CC-Request-Type: 5005 with Failed-AVP
    ccr = a_ccr("x;1;3")
    frame = encode_ccr(ccr, *c.next_ids())
    answer = await c.request_raw(_drop_avp(frame, 416))
    assert result_code(answer) == C.DIAMETER_MISSING_AVP
    failed = decode_message(answer).find("Failed-AVP")
    assert failed is not None and failed.children[0].code == 416  # names the missing CC-Request-Type
    # a request with the reserved header bits set: 3008 with the E bit, the connection stays up
    frame = bytearray(encode_ccr(a_ccr("x;1;4"), *c.next_ids()))
    frame[4] |= 0x0F
    answer = await c.request_raw(bytes(frame))
    assert result_code(answer) == C.DIAMETER_INVALID_HDR_BITS and decode_header(answer).is_error
    dwa = await c.watchdog()
    assert result_code(dwa) == C.DIAMETER_SUCCESS
    dpa = await c.disconnect()
    assert result_code(dpa) == C.DIAMETER_SUCCESS
    await asyncio.wait_for(c.closed.wait(), 5)
    await c.close()


def _drop_avp(frame: bytes, code: int) -> bytes:
    """Remove a top-level AVP and fix the message length."""
    pos, out = 20, bytearray(frame[:20])
    while pos < len(frame):
        avp_code, flags_len = struct.unpack_from(">II", frame, pos)
        length = flags_len & 0xFFFFFF
        nxt = pos + ((length + 3) & ~3)
        if avp_code != code:
            out += frame[pos:nxt]
        pos = nxt
    out[1:4] = len(out).to_bytes(3, "big")
    return bytes(out)


async def test_malformed_peer_does_not_affect_others(server: RunningServer) -> None:
    good = await DiameterClient.connect(server.host, server.port, origin_host="good.test")
    a = await good.ccr(a_ccr("good.test;1;1", "491710000002"))
    assert a.result_code == 2001
    bad_r, bad_w = await asyncio.open_connection(server.host, server.port)
    bad_w.write(encode_cer(CER(origin_host="bad.test", origin_realm="test", host_ip_addresses=["127.0.0.1"],
                               auth_application_ids=[4]), 1, 1))
    await bad_r.read(4096)
    garbage = [b"\x02\x00\x00\x14" + bytes(16),               # version 2
               b"\x01\x00\x00\x08" + bytes(4),                # length below the header
               b"\x01\xff\xff\xff" + bytes(60)]               # 16 MiB claimed
    for g in garbage:
        r, w = await asyncio.open_connection(server.host, server.port)
        w.write(g)
        data = await asyncio.wait_for(r.read(4096), 5)  # an error answer or a close, never a hang
        assert data == b"" or decode_header(data).is_error
        w.close()
    bad_w.write(b"\x01\x00\x00\x40" + b"\xff" * 60)
    await bad_w.drain()
    n = 2
    for i in range(20):  # the good peer's session goes on
        a = await good.ccr(a_ccr("good.test;1;1", "491710000002", 2, n))
        n += 1
        assert a.result_code == 2001, i
    bad_w.close()
    await good.close()


async def test_metrics_exposed(server: RunningServer) -> None:
    c = await DiameterClient.connect(server.host, server.port)
    await c.ccr(a_ccr("metrics;1;1"))
    await c.close()
    body = await asyncio.to_thread(lambda: urllib.request.urlopen("http://127.0.0.1:19187/metrics", timeout=5).read().decode())
    assert 'ocs_requests_total{command="CCR",request_type="INITIAL",result_code="2001"}' in body
    for name in ("ocs_request_latency_seconds_bucket", "ocs_in_flight_requests", "ocs_open_sessions",
                 "ocs_reserved_money_micro", "ocs_group_commit_batch_size", "ocs_group_commit_seconds",
                 "ocs_peers_connected"):
        assert name in body


async def test_allowlist_refuses_unknown_peer(tmp_path: Path) -> None:
    provision(tmp_path / "d", ACCOUNTS)
    srv = start_server(tmp_path / "d", "--allow-peer", "pgw.allowed", "--no-cdr-export")
    try:
        c = await DiameterClient.connect(srv.host, srv.port, origin_host="intruder.test", cer=False)
        cea = await c.capabilities_exchange()
        assert cea.result_code == C.DIAMETER_UNKNOWN_PEER
        await asyncio.wait_for(c.closed.wait(), 5)
        ok = await DiameterClient.connect(srv.host, srv.port, origin_host="pgw.allowed")
        await ok.close()
    finally:
        assert srv.stop() == 0


async def test_too_busy_beyond_the_bound(tmp_path: Path) -> None:
    provision(tmp_path / "d", ACCOUNTS)
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("max_in_flight = 4\nmax_in_flight_per_peer = 4\ncdr_export = false\n")
    srv = start_server(tmp_path / "d", "--config", str(cfg))
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        frames = [encode_ccr(a_ccr(f"busy;{i};1"), *c.next_ids()) for i in range(200)]
        hbhs = [struct.unpack_from(">I", f, 12)[0] for f in frames]
        futs = []
        loop = asyncio.get_running_loop()
        for h in hbhs:
            fut = loop.create_future()
            c._pending[h] = fut
            futs.append(fut)
        c.writer.write(b"".join(frames))  # 200 requests in one write: more than the bound
        answers = await asyncio.wait_for(asyncio.gather(*futs), 20)
        codes = [result_code(a) for a in answers]
        assert C.DIAMETER_TOO_BUSY in codes and C.DIAMETER_SUCCESS in codes
        assert all(decode_header(a).is_error for a in answers if result_code(a) == C.DIAMETER_TOO_BUSY)
        await c.close()
    finally:
        assert srv.stop() == 0


async def test_graceful_shutdown_sends_dpr(tmp_path: Path) -> None:
    provision(tmp_path / "d", ACCOUNTS)
    srv = start_server(tmp_path / "d", "--no-cdr-export")
    c = await DiameterClient.connect(srv.host, srv.port)
    a = await c.ccr(a_ccr("shutdown;1;1"))
    assert a.result_code == 2001
    srv.proc.send_signal(15)
    await asyncio.wait_for(c.closed.wait(), 15)
    assert [h.command_code for h, _ in c.requests_from_server] == [C.CC_DISCONNECT_PEER]
    assert await asyncio.to_thread(srv.proc.wait, 20) == 0
    await c.close()


def test_cea_bytes_decode(server: RunningServer) -> None:
    """A synchronous round trip with a plain socket, no asyncio: what a C client would see."""
    import socket
    s = socket.create_connection((server.host, server.port), timeout=5)
    s.sendall(encode_cer(CER(origin_host="sock.test", origin_realm="test", host_ip_addresses=["127.0.0.1"],
                             auth_application_ids=[4]), 7, 9))
    data = s.recv(65536)
    s.close()
    header = decode_header(data)
    assert (header.hop_by_hop, header.end_to_end, header.is_request) == (7, 9, False)
    assert decode_cea(data).result_code == 2001
