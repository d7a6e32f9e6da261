"""The LMDB map at its cap (`max_map_size`) is the same degraded state as a full disk: 3004, logged
once, nothing lost (reconcile after SIGTERM and after kill -9 + restart)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import gy_requests
import pytest
from server_harness import provision, start_server

from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import CCR, MSCCRequest, Units

MIB = 1 << 20
_ids = itertools.count(1)


def ccr(sid: str, msisdn: str, rtype: int, number: int) -> CCR:
    mscc = (MSCCRequest(rating_group=200, requested=Units(total_octets=MIB)) if rtype == 1 else
            MSCCRequest(rating_group=200, used=[Units(total_octets=MIB)]))
    return gy_requests.ccr(sid, rtype, number, msisdn, [mscc])


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
async def test_map_full_answers_3004_and_logs_once(tmp_path, stop) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    accounts = {f"4917{i:08d}": {"balance": "1000"} for i in range(20)}
    provision(data, accounts)
    config = tmp_path / "ocs.toml"
    config.write_text(f"max_map_size = {2 * MIB}\n")
    srv = start_server(data, "--config", str(config))
    try:
        c = await DiameterClient.connect(srv.host, srv.port)
        ids = itertools.cycle(accounts)
        codes: list[int] = []
        for _ in range(5000):  # sessions left open: each one takes pages until the map is full
            msisdn = next(ids)
            a = await c.ccr(ccr(f"pgw.map;{next(_ids)};{'m' * 300}", msisdn, 1, 0))
            codes.append(a.result_code)
            if codes.count(C.DIAMETER_TOO_BUSY) >= 20:
                break
        await c.close()
    finally:
        if stop == "kill":
            srv.kill()
        else:
            assert srv.stop() == 0, srv.log()
    assert codes.count(C.DIAMETER_TOO_BUSY) >= 20, "the map never filled up"
    assert set(codes) <= {C.DIAMETER_SUCCESS, C.DIAMETER_TOO_BUSY}, set(codes)
    first_busy = codes.index(C.DIAMETER_TOO_BUSY)
    assert all(code == C.DIAMETER_SUCCESS for code in codes[:first_busy])
    log = srv.log()
    assert "Traceback" not in log, log[-3000:]
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert 1 <= len(errors) <= 3, errors
    assert "the store cannot write" in log
    if stop == "kill":
        srv = start_server(data)  # no cap now: the restarted server takes requests again
        assert srv.stop() == 0, srv.log()
    rec = subprocess.run([sys.executable, "-m", "ocs", "reconcile", "--data", str(data)],
                         capture_output=True, text=True, timeout=120)
    assert rec.returncode == 0, rec.stdout + rec.stderr
