"""No phantom sessions, against the real server: a CCR-I refused before any quota is granted or
usage charged is not an open session (ocs_open_sessions, the sweeper, the CDRs), yet its
retransmission still gets the first answer byte for byte, and the Session-Id can be used again."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from probes import free_port, scrape, wait_metrics
from server_harness import provision, start_server

from balance.store import open_store
from ocs.billing import cdr as cdrs
from ocs.charging import counters, credit
from ocs.client import DiameterClient
from protocol import constants as C
from protocol.cca import decode_cca
from protocol.ccr import encode_ccr
from protocol.records import CCR, MSCCRequest, Units

BROKE, RICH, SUSPENDED, NOBODY = "491720000001", "491720000002", "491720000003", "491729999999"
ACCOUNTS = {BROKE: {"balance": "0"}, RICH: {"balance": "10"},
            SUSPENDED: {"balance": "10", "status": "suspended"}}
# how each refused CCR-I is made: (msisdn, rating group) -> the Result-Code it must get
REFUSALS = [((BROKE, 100), C.DIAMETER_CREDIT_LIMIT_REACHED), ((NOBODY, 100), C.DIAMETER_USER_UNKNOWN),
            ((RICH, 999), C.DIAMETER_RATING_FAILED), ((SUSPENDED, 100), C.DIAMETER_END_USER_SERVICE_DENIED)]


def a_ccr(sid: str, rtype: int, number: int, msisdn: str, mscc: list[MSCCRequest]) -> CCR:
    return CCR(session_id=sid, destination_realm="test", auth_application_id=4,
               service_context_id="32251@3gpp.org", request_type=rtype, request_number=number,
               subscription_ids=[(C.SubscriptionIdType.END_USER_E164, msisdn)], mscc=mscc,
               origin_host="client.test", origin_realm="test")


def rsu(rg: int) -> MSCCRequest:
    return MSCCRequest(rating_group=rg, requested=Units(time=60))


def without_hop_by_hop(answer: bytes) -> bytes:
    return answer[:12] + answer[16:]


def session_cdrs(data) -> list[cdrs.CDR]:  # type: ignore[no-untyped-def]
    store = open_store(data)
    try:
        dbs = credit.open_dbs(store)
        with store.read() as view:
            return list(cdrs.iter_from(view.txn, dbs["cdrs"]))
    finally:
        store.close()


async def test_refused_initials_are_not_open_and_never_swept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    provision(data, ACCOUNTS)
    cfg = tmp_path / "ocs.toml"
    cfg.write_text("sweep_interval = 0.5\ncdr_export = false\n")
    mport = free_port()
    srv = start_server(data, "--config", str(cfg), "--session-timeout", "8",
                       "--metrics", f"127.0.0.1:{mport}")
    try:
        before = await wait_metrics(mport, lambda v: "ocs_open_sessions" in v)
        assert before["ocs_open_sessions"] == 0
        c = await DiameterClient.connect(srv.host, srv.port)
        refused: dict[int, tuple[bytes, bytes]] = {}  # kind -> (request frame, first answer)

        async def refuse(i: int) -> None:
            (msisdn, rg), want = REFUSALS[i % len(REFUSALS)]
            frame = encode_ccr(a_ccr(f"refused;{i}", 1, 0, msisdn, [rsu(rg)]), *c.next_ids())
            answer = await c.request_raw(frame, timeout=60)
            assert decode_cca(answer).result_code == want, (i, decode_cca(answer))
            refused.setdefault(i % len(REFUSALS), (frame, answer))

        for chunk in range(10):
            await asyncio.gather(*(refuse(chunk * 100 + i) for i in range(100)))
        # Three sessions really open, each with usage: two granted, one refused on one rating
        # group (5031) and granted on the other.
        real = ["real;1", "real;2", "real;partial"]
        for sid, mscc in zip(real, [[rsu(100)], [rsu(100)], [rsu(999), rsu(100)]], strict=True):
            a = await c.ccr(a_ccr(sid, 1, 0, RICH, mscc))
            assert a.result_code == C.DIAMETER_SUCCESS, a
            used = MSCCRequest(rating_group=100, requested=Units(time=60), used=[Units(time=30)])
            assert (await c.ccr(a_ccr(sid, 2, 1, RICH, [used]))).result_code == C.DIAMETER_SUCCESS
        now_open = await wait_metrics(mport, lambda v: v["ocs_open_sessions"] == 3, 6)
        assert now_open["ocs_open_sessions"] == 3  # not 1003

        # The sweeper closes the three once they go quiet, and none of the refused ones (older
        # than the three, so stale first if they were taken for open sessions).
        after = await wait_metrics(mport, lambda v: v["ocs_open_sessions"] == 0
                                   and v.get("ocs_stale_sessions_closed_total", 0) >= 3)
        assert after["ocs_open_sessions"] == before["ocs_open_sessions"]
        assert after["ocs_stale_sessions_closed_total"] == 3
        await asyncio.sleep(1.5)  # three more sweeps and a stats tick: still nothing else closed
        assert (await asyncio.to_thread(scrape, mport))["ocs_stale_sessions_closed_total"] == 3

        # Each kind of refusal, retransmitted (T flag, new hop-by-hop id): the first answer again.
        for frame, first in refused.values():
            again = bytearray(frame)
            again[4] |= 0x10  # T: a retransmission
            again[12:16] = (int.from_bytes(frame[12:16], "big") ^ 0x5A5A).to_bytes(4, "big")
            replay = await c.request_raw(bytes(again))
            assert without_hop_by_hop(replay) == without_hop_by_hop(first)
            assert replay[12:16] == bytes(again[12:16])
        await c.close()
    finally:
        assert srv.stop() == 0, srv.log()
    records = session_cdrs(data)
    assert sorted(r.session_id for r in records) == sorted(real)
    assert {r.termination_cause for r in records} == {"STALE"}


def run_cli(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "ocs", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


async def test_refused_initial_then_retry_after_top_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    provision(data, {BROKE: {"balance": "0"}})
    srv = start_server(data, "--no-cdr-export")
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        sid = "pgw;retry;1"
        frame = encode_ccr(a_ccr(sid, 1, 0, BROKE, [rsu(100)]), *c.next_ids())
        first = await c.request_raw(frame)
        assert decode_cca(first).result_code == C.DIAMETER_CREDIT_LIMIT_REACHED
        # an update of the refused session: as for a session never opened
        upd = await c.ccr(a_ccr(sid, 2, 1, BROKE, [rsu(100)]))
        assert upd.result_code == C.DIAMETER_UNKNOWN_SESSION_ID
        run_cli("account", "topup", BROKE, "1.00", "--data", str(data))
        again = await c.ccr(a_ccr(sid, 1, 2, BROKE, [rsu(100)]))  # the gateway retries
        assert again.result_code == C.DIAMETER_SUCCESS
        assert again.mscc[0].granted.time == 60
        replay = await c.request_raw(frame[:12] + (7).to_bytes(4, "big") + frame[16:])
        assert without_hop_by_hop(replay) == without_hop_by_hop(first)
        used = MSCCRequest(rating_group=100, used=[Units(time=45)])
        end = await c.ccr(a_ccr(sid, 3, 3, BROKE, [used]))
        assert end.result_code == C.DIAMETER_SUCCESS
        await c.close()
    finally:
        assert srv.stop() == 0, srv.log()
    records = session_cdrs(data)
    assert [(r.session_id, r.used_units, r.amount, r.termination_cause) for r in records] == [(sid, 45, 10_000, "NORMAL")]
    store = open_store(data)
    try:
        with store.read() as view:
            count = counters.open_sessions(view.txn, view.dbs)
        assert count == 0
    finally:
        store.close()
