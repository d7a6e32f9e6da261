"""The server's operational log (stderr of `ocs serve`): peers opening and closing with the
reason, sweeper passes that closed something, overload episodes (one start, one end)."""

from __future__ import annotations

import asyncio
import re
import struct
import time
from pathlib import Path

from server_harness import RunningServer, provision, start_server

from ocs.client import DiameterClient
from ocs.front.dispatch import result_code_of
from protocol import constants as C
from protocol.ccr import encode_ccr
from protocol.records import CCR, MSCCRequest, Units

MSISDN = "491740000001"


def a_ccr(sid: str) -> CCR:
    return CCR(session_id=sid, destination_realm="test", auth_application_id=4,
               service_context_id="32251@3gpp.org", request_type=1, request_number=0,
               subscription_ids=[(C.SubscriptionIdType.END_USER_E164, MSISDN)],
               mscc=[MSCCRequest(rating_group=100, requested=Units(time=60))],
               origin_host="burst.test", origin_realm="test")


async def wait_log(srv: RunningServer, pattern: str, count: int = 1, seconds: float = 20.0) -> list[str]:
    """The log lines matching `pattern` once there are `count` of them (at most `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        lines = [ln for ln in srv.log().splitlines() if re.search(pattern, ln)]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.1)


async def test_peer_open_and_close_reasons(tmp_path: Path) -> None:
    provision(tmp_path / "d", {MSISDN: {"balance": "10"}})
    srv = start_server(tmp_path / "d", "--no-cdr-export")
    try:
        a = await DiameterClient.connect(srv.host, srv.port, origin_host="gw-a.test")
        await a.disconnect()  # DPR: answered with DPA, then we close
        await asyncio.wait_for(a.closed.wait(), 10)
        await a.close()
        b = await DiameterClient.connect(srv.host, srv.port, origin_host="gw-b.test")
        await b.close()  # dropped without DPR
        c = await DiameterClient.connect(srv.host, srv.port, origin_host="gw-c.test")
        for host in ("gw-a.test", "gw-b.test", "gw-c.test"):
            opened = await wait_log(srv, rf"INFO ocs\.peer: peer {host} \(ocs-client\) open from 127\.0\.0\.1:\d+$")
            assert len(opened) == 1, srv.log()
        assert len(await wait_log(srv, r"peer gw-a\.test closed: DPR received \(Disconnect-Cause 0\)$")) == 1
        assert len(await wait_log(srv, r"peer gw-b\.test closed: connection closed by peer$")) == 1
        assert not await wait_log(srv, r"peer gw-c\.test closed", seconds=0)
    finally:
        assert srv.stop() == 0, srv.log()
    await c.close()
    lines = [ln for ln in srv.log().splitlines() if "closed:" in ln]
    assert [ln.split("ocs.peer: ")[1] for ln in lines] == [
        "peer gw-a.test closed: DPR received (Disconnect-Cause 0)",
        "peer gw-b.test closed: connection closed by peer",
        "peer gw-c.test closed: shutdown"]  # our DPR (this client does not answer it)


async def test_watchdog_timeout_and_errors_are_logged(tmp_path: Path) -> None:
    provision(tmp_path / "d", {MSISDN: {"balance": "10"}})
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("watchdog_interval = 0.5\ncdr_export = false\n")
    srv = start_server(tmp_path / "d", "--config", str(cfg))
    try:
        mute = await DiameterClient.connect(srv.host, srv.port, origin_host="gw-mute.test")  # never answers DWR
        await asyncio.wait_for(mute.closed.wait(), 10)
        await mute.close()
        bad = await DiameterClient.connect(srv.host, srv.port, origin_host="gw-bad.test")
        bad.writer.write(b"\x07" + b"\x00" * 19)  # version 7: not a Diameter stream
        await asyncio.wait_for(bad.closed.wait(), 10)
        await bad.close()
        assert len(await wait_log(srv, r"INFO ocs\.peer: peer gw-mute\.test closed: "
                                       r"watchdog timeout \(no answer to DWR\)$")) == 1
        assert len(await wait_log(srv, r"INFO ocs\.peer: peer gw-bad\.test closed: error: ")) == 1
    finally:
        assert srv.stop() == 0, srv.log()


async def burst(c: DiameterClient, tag: str, n: int = 200) -> list[int]:
    """n CCR-Is in one write (far beyond the bound); their Result-Codes."""
    frames = [encode_ccr(a_ccr(f"{tag};{i}"), *c.next_ids()) for i in range(n)]
    loop = asyncio.get_running_loop()
    futs = []
    for f in frames:
        fut = loop.create_future()
        c._pending[struct.unpack_from(">I", f, 12)[0]] = fut
        futs.append(fut)
    c.writer.write(b"".join(frames))
    answers = await asyncio.wait_for(asyncio.gather(*futs), 60)
    return [result_code_of(a) for a in answers]


async def test_overload_episodes_and_sweeper_passes(tmp_path: Path) -> None:
    provision(tmp_path / "d", {MSISDN: {"balance": "1000"}})
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("max_in_flight = 4\nmax_in_flight_per_peer = 4\nsweep_interval = 0.5\ncdr_export = false\n")
    srv = start_server(tmp_path / "d", "--config", str(cfg), "--session-timeout", "1")
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        granted = 0
        for episode in (1, 2):
            codes = await burst(c, f"burst{episode}")
            shed = codes.count(C.DIAMETER_TOO_BUSY)
            assert shed and codes.count(C.DIAMETER_SUCCESS) + shed == len(codes)
            granted += len(codes) - shed
            ends = await wait_log(srv, r"WARNING ocs\.dispatch: overload over: ", episode)
            assert len(ends) == episode
            assert re.search(rf"overload over: {shed} requests answered DIAMETER_TOO_BUSY in \d+\.\d s$", ends[-1])
            starts = await wait_log(srv, r"WARNING ocs\.dispatch: overload: answering DIAMETER_TOO_BUSY", seconds=0)
            assert len(starts) == episode, srv.log()
            assert starts[-1].endswith(("max_in_flight 4)", "max_in_flight_per_peer 4)"))
        # every granted session goes quiet: the sweeper closes them all, a line per pass
        deadline = time.monotonic() + 30
        total = 0
        while total < granted and time.monotonic() < deadline:
            lines = await wait_log(srv, r"INFO ocs\.sweeper: closed \d+ stale sessions ", seconds=0)
            total = sum(int(ln.split("closed ")[1].split()[0]) for ln in lines)
            await asyncio.sleep(0.2)
        assert total == granted, srv.log()
        assert all(int(ln.split("closed ")[1].split()[0]) > 0 for ln in lines)
        await c.close()
    finally:
        assert srv.stop() == 0, srv.log()
