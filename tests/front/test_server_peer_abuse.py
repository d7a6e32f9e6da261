"""A peer that misbehaves on purpose, against the real server: it must not hold resources without
bound, lose another peer's answers, or go unanswered where RFC 6733 asks for an answer.

Found by an adversarial review of the network front: answers piled up for a peer that never
reads, slowloris connections never timed out and had no cap, DPA overtook the answers in flight,
repeated CERs were decoded on the loop thread, and framing errors got no answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from server_harness import RunningServer, provision, start_server

from protocol import constants as C
from protocol.base import decode_cea, encode_cer, encode_dpr, encode_dwr
from protocol.ccr import encode_ccr
from protocol.header import decode_header
from protocol.records import CCR, CER, DPR, DWR, MSCCRequest, Units

ACCOUNTS = {"491740000001": {"balance": "100"}}
CONFIG = "watchdog_interval = 1.0\nmax_connections = 8\ncdr_export = false\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("peer-abuse") / "data"
    provision(data, ACCOUNTS)
    cfg = data.parent / "ocs.toml"
    cfg.write_text(CONFIG)
    srv = start_server(data, "--config", str(cfg))
    yield srv
    assert srv.stop() == 0, srv.log()


def cer(host: str = "peer.test") -> bytes:
    return encode_cer(CER(origin_host=host, origin_realm="test", host_ip_addresses=["127.0.0.1"],
                          auth_application_ids=[4]), 1, 1)


def event(n: int) -> bytes:
    req = CCR(session_id=f"peer.test;{time.time_ns()};{n}", origin_host="peer.test", origin_realm="test",
              destination_realm="test", service_context_id="32251@3gpp.org", request_type=4,
              request_number=0, subscription_ids=[(0, "491740000001")],
              mscc=[MSCCRequest(rating_group=300, requested=Units(service_specific_units=1))])
    return encode_ccr(req, 1000 + n, 1000 + n)


async def read_frames(r: asyncio.StreamReader, count: int, timeout: float = 10.0) -> list[bytes]:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            head = await r.readexactly(4)
            length = int.from_bytes(head[1:], "big")
            out.append(head + await r.readexactly(length - 4))
    return out


async def opened(server: RunningServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection(server.host, server.port)
    w.write(cer())
    (cea,) = await read_frames(r, 1)
    assert decode_cea(cea).result_code == C.DIAMETER_SUCCESS
    return r, w


async def closed_within(r: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            while await r.read(65536):
                pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_dpa_comes_after_the_answers_in_flight(server: RunningServer) -> None:
    r, w = await opened(server)
    dpr = encode_dpr(DPR(origin_host="peer.test", origin_realm="test", disconnect_cause=0), 7, 7)
    w.write(b"".join(event(i) for i in range(50)) + dpr)  # 50 debits in flight, then DPR
    frames = await read_frames(r, 51)
    commands = [decode_header(f).command_code for f in frames]
    assert commands == [C.CC_CREDIT_CONTROL] * 50 + [C.CC_DISCONNECT_PEER]
    assert await closed_within(r, 5)
    w.close()


async def test_watchdog_is_answered_while_disconnecting(server: RunningServer) -> None:
    r, w = await opened(server)
    dpr = encode_dpr(DPR(origin_host="peer.test", origin_realm="test", disconnect_cause=0), 7, 7)
    dwr = encode_dwr(DWR(origin_host="peer.test", origin_realm="test"), 8, 8)
    w.write(b"".join(event(i) for i in range(20)) + dpr + dwr)
    frames = await read_frames(r, 22)
    dwa = [f for f in frames if decode_header(f).command_code == C.CC_DEVICE_WATCHDOG]
    assert len(dwa) == 1 and not decode_header(dwa[0]).is_error
    w.close()


async def test_second_cer_answered_but_cannot_change_the_peer(server: RunningServer) -> None:
    r, w = await opened(server)
    w.write(cer())                      # RFC 6733 §5.6: CEA again, the connection stays open
    (cea,) = await read_frames(r, 1)
    assert decode_cea(cea).result_code == C.DIAMETER_SUCCESS
    w.write(event(99))
    (answer,) = await read_frames(r, 1)
    assert decode_header(answer).command_code == C.CC_CREDIT_CONTROL
    w.write(cer("someone.else"))        # another Origin-Host on this connection: refused, closed
    (cea,) = await read_frames(r, 1)
    assert decode_cea(cea).result_code == C.DIAMETER_UNKNOWN_PEER
    assert await closed_within(r, 0.5)  # at once, not by the watchdog (1 s, then 2 s)
    w.close()


@pytest.mark.parametrize("frame,code", [
    (b"\x02\x00\x00\x14\x80\x00\x01\x10" + bytes(12), C.DIAMETER_UNSUPPORTED_VERSION),
    (b"\x01\x00\x00\x16\x80\x00\x01\x10" + bytes(12), C.DIAMETER_INVALID_MESSAGE_LENGTH),  # 22
    (b"\x01\xff\xff\xf0\x80\x00\x01\x10" + bytes(12), C.DIAMETER_INVALID_MESSAGE_LENGTH),  # too big
])
async def test_unframeable_request_is_answered_then_closed(server: RunningServer, frame: bytes, code: int) -> None:
    r, w = await opened(server)
    w.write(frame)
    (answer,) = await read_frames(r, 1)
    h = decode_header(answer)
    assert not h.is_request and h.command_code == C.CC_CREDIT_CONTROL
    from ocs.front.dispatch import result_code_of
    assert result_code_of(answer) == code
    assert await closed_within(r, 5)
    w.close()


async def test_trickling_connection_without_cer_is_closed(server: RunningServer) -> None:
    r, w = await asyncio.open_connection(server.host, server.port)
    head = cer()
    t0 = time.monotonic()

    async def trickle() -> None:
        for b in head[:60]:  # one byte every 0.1 s for 6 s, never a whole CER
            w.write(bytes([b]))
            await asyncio.sleep(0.1)

    task = asyncio.create_task(trickle())
    assert await closed_within(r, 4)
    assert time.monotonic() - t0 < 3  # about one watchdog interval after connecting, bytes or not
    task.cancel()
    w.close()


async def test_connections_beyond_the_cap_are_closed(server: RunningServer) -> None:
    conns = [await opened(server) for _ in range(8)]       # max_connections = 8
    r, w = await asyncio.open_connection(server.host, server.port)
    assert await closed_within(r, 0.5)                      # at once, not by the CER timeout
    w.close()
    conns[0][1].close()                                     # one leaves: room again
    await asyncio.sleep(0.3)
    silent_r, silent_w = await asyncio.open_connection(server.host, server.port)  # no CER
    await asyncio.sleep(0.1)
    r2, w2 = await opened(server)                           # full again: the silent one goes
    assert await closed_within(silent_r, 0.5)
    for _, cw in [*conns[1:], (r2, w2), (silent_r, silent_w)]:
        cw.close()
    await asyncio.sleep(0.3)


async def test_peer_that_never_reads_is_paused_then_dropped(server: RunningServer) -> None:
    r, w = await opened(server)
    dwr = encode_dwr(DWR(origin_host="peer.test", origin_realm="test"), 9, 9)
    sent, t0 = 0, time.monotonic()
    stalled = False
    while time.monotonic() - t0 < 10 and sent < 64 << 20:   # bounded: 10 s, 64 MiB
        w.write(dwr * 512)
        sent += len(dwr) * 512
        try:
            await asyncio.wait_for(w.drain(), 0.5)
        except TimeoutError:
            stalled = True  # the server stopped reading us: its answers are not piling up
            break
    assert stalled and sent < 64 << 20
    assert await closed_within(r, 15)  # watchdog (no DWA from us) then abort of the unread rest
    w.transport.abort()
    _, w2 = await opened(server)  # the server is fine for everyone else
    w2.close()
