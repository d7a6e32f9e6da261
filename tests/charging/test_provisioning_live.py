"""Read-your-writes: a CLI change that has returned is in force for the very next request.

The server is started first, on an empty data dir; every change then goes through the real `ocs`
command line, and the CCR that depends on it is sent the moment the command returns: no sleep, no
retry. Balances are read back from LMDB to check which price was charged.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from gy_requests import ccr as gy_ccr
from server_harness import account, start_server

from balance.money import to_micro
from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import MSCCRequest, Units

_ids = itertools.count(1)

TARIFF = """
currency = "EUR"

[[plan]]
name = "default"

[[rate]]
rating_group = 100
unit = "seconds"
price = "{price}"
increment = 60
"""


async def ocs(data: Path, *argv: str) -> str:
    """Run `ocs ARGV --data DATA` as a client would; returns stdout, fails on a non-zero exit."""
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ocs", *argv, "--data", str(data)],
                                   capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    return proc.stdout


ccr = partial(gy_ccr, service_context="32260@3gpp.org")  # the MMTel (voice) context


def voice(requested: int | None = None, used: int | None = None) -> list[MSCCRequest]:
    return [MSCCRequest(rating_group=100,
                        requested=Units(time=requested) if requested is not None else None,
                        used=[Units(time=used)] if used is not None else [])]


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("live") / "data"
    srv = start_server(data)
    yield srv
    assert srv.stop() == 0, srv.log()


async def test_tariff_and_account_in_force_for_the_next_ccr(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Twenty times: a fresh account, then a fresh tariff price, then a one-minute call at once."""
    first = tmp_path / "first.toml"
    first.write_text(TARIFF.format(price="0.99"))
    await ocs(server.data, "tariff", "load", str(first))
    c = await DiameterClient.connect(server.host, server.port)
    try:
        for i in range(20):
            msisdn = f"4917{i:08d}"
            await ocs(server.data, "account", "create", msisdn, "--balance", "10", "--currency", "EUR")
            price = f"0.{i + 1:02d}"
            path = tmp_path / f"t{i}.toml"
            path.write_text(TARIFF.format(price=price))
            out = await ocs(server.data, "tariff", "load", str(path))
            assert "in force now" in out, out
            sid = f"pgw.live;{next(_ids)}"
            a = await c.ccr(ccr(sid, 1, 0, msisdn, voice(requested=60)))
            assert a.result_code == C.DIAMETER_SUCCESS, (i, a)
            assert a.mscc[0].result_code == C.DIAMETER_SUCCESS and a.mscc[0].granted.time == 60, (i, a)
            a = await c.ccr(ccr(sid, 3, 1, msisdn, voice(used=60)))
            assert a.result_code == C.DIAMETER_SUCCESS
            assert account(server.data, msisdn).balance == to_micro("10") - to_micro(price), i
    finally:
        await c.close()


async def test_topup_suspension_bundle_and_retire_in_force_at_once(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "base.toml"
    path.write_text(TARIFF.format(price="0.50"))
    out = await ocs(server.data, "tariff", "load", str(path))
    base = int(out.split("version ")[1].split()[0])
    c = await DiameterClient.connect(server.host, server.port)
    try:
        # A top-up turns a 4012 into a grant.
        broke = "491799000001"
        await ocs(server.data, "account", "create", broke, "--balance", "0", "--currency", "EUR")
        a = await c.ccr(ccr("pgw.live;broke;1", 1, 0, broke, voice(requested=60)))
        assert a.mscc[0].result_code == C.DIAMETER_CREDIT_LIMIT_REACHED, a
        await ocs(server.data, "account", "topup", broke, "5", "--idempotency-key", "live-topup-1")
        a = await c.ccr(ccr("pgw.live;broke;2", 1, 0, broke, voice(requested=60)))
        assert a.result_code == C.DIAMETER_SUCCESS and a.mscc[0].result_code == C.DIAMETER_SUCCESS, a
        assert a.mscc[0].granted.time == 60

        # A suspension turns the next CCR-U into 4010.
        sus = "491799000002"
        await ocs(server.data, "account", "create", sus, "--balance", "10", "--currency", "EUR")
        sid = "pgw.live;sus;1"
        a = await c.ccr(ccr(sid, 1, 0, sus, voice(requested=60)))
        assert a.mscc[0].result_code == C.DIAMETER_SUCCESS
        await ocs(server.data, "account", "suspend", sus)
        a = await c.ccr(ccr(sid, 2, 1, sus, voice(requested=60, used=30)))
        codes = {a.result_code, *(m.result_code for m in a.mscc)}
        assert C.DIAMETER_END_USER_SERVICE_DENIED in codes, a

        # A bundle added between two CCR-Us pays for the second one's usage.
        bun = "491799000003"
        await ocs(server.data, "account", "create", bun, "--balance", "10", "--currency", "EUR")
        sid = "pgw.live;bun;1"
        a = await c.ccr(ccr(sid, 1, 0, bun, voice(requested=60)))
        a = await c.ccr(ccr(sid, 2, 1, bun, voice(requested=60, used=60)))
        assert account(server.data, bun).balance == to_micro("10") - to_micro("0.50")
        await ocs(server.data, "account", "bundle", bun, "--unit", "seconds", "--amount", "600",
                  "--rating-group", "100", "--expires", "2099-01-01T00:00:00Z")
        a = await c.ccr(ccr(sid, 2, 2, bun, voice(requested=60, used=60)))
        a = await c.ccr(ccr(sid, 3, 3, bun, voice(used=60)))
        assert a.result_code == C.DIAMETER_SUCCESS
        assert account(server.data, bun).balance == to_micro("10") - to_micro("0.50"), \
            "usage after the bundle was added was charged to money"

        # Retiring the version in force puts the previous one back for the next new session.
        dear = tmp_path / "dear.toml"
        dear.write_text(TARIFF.format(price="2.00"))
        out = await ocs(server.data, "tariff", "load", str(dear))
        version = int(out.split("version ")[1].split()[0])
        # The dear version is in force for the very next new session ...
        dearacct = "491799000005"
        await ocs(server.data, "account", "create", dearacct, "--balance", "10", "--currency", "EUR")
        a = await c.ccr(ccr("pgw.live;dear;1", 1, 0, dearacct, voice(requested=60)))
        a = await c.ccr(ccr("pgw.live;dear;1", 3, 1, dearacct, voice(used=60)))
        assert account(server.data, dearacct).balance == to_micro("10") - to_micro("2.00")
        # ... and once retired, the previous one is back for the next.
        await ocs(server.data, "tariff", "retire", str(version))
        ret = "491799000004"
        await ocs(server.data, "account", "create", ret, "--balance", "10", "--currency", "EUR")
        a = await c.ccr(ccr("pgw.live;ret;1", 1, 0, ret, voice(requested=60)))
        a = await c.ccr(ccr("pgw.live;ret;1", 3, 1, ret, voice(used=60)))
        assert account(server.data, ret).balance == to_micro("10") - to_micro("0.50")
    finally:
        await c.close()
    assert f"tariff version {base} takes effect for new sessions (was version {version})" in server.log()
    deadline = time.monotonic() + 10  # a log line, not a charging contract: the front logs once a second
    while f"account {sus} is now suspended" not in server.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert f"account {sus} is now suspended" in server.log()
