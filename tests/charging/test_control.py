"""The engine's control channel, from outside: the `ocs` command line against a running server.

While `ocs serve` runs, its engine holds the data dir's lock exclusively, so a CLI command cannot
run on LMDB itself: it must go through the engine's socket. These tests run the real CLI as a
subprocess and raw clients of the socket; a change is checked by the next CCR with no sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from gy_requests import ccr as gy_ccr
from server_harness import account, provision, start_server

from balance.money import to_micro
from ocs.charging.control import wire
from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import MSCCRequest, Units


def ocs(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocs", *argv, "--data", str(data)],
                          capture_output=True, text=True, timeout=120)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def gone(pids: list[int], timeout: float = 10.0) -> None:
    """Wait (bounded) until every thread of each process has exited. A killed process's leader
    shows as a zombie at once, but its files (the data dir's lock) are closed only when its last
    thread has left the kernel: the engine's syncer may be inside an fdatasync."""
    import time
    deadline = time.monotonic() + timeout

    def running(pid: int) -> bool:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return False
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                        return True
            except OSError:
                continue
        return False

    for pid in pids:
        while running(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"process {pid} still runs {timeout} s after SIGKILL")
            time.sleep(0.01)


def lock_free(data: Path) -> bool:
    fd = wire.open_lock(str(data))
    try:
        return wire.try_shared(fd)
    finally:
        os.close(fd)


def raw_call(data: Path, payload: bytes) -> object:
    """Send raw bytes on the control socket; the decoded answer, or None if it closed on us."""
    addr = wire.Address(str(data))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(addr.address)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                return wire.recv(s)
            except ConnectionError:
                return None
    finally:
        addr.close()


def call(data: Path, cmd: str, **args: object) -> object:
    return raw_call(data, wire.pack({"cmd": cmd, "args": args}))


voice = [MSCCRequest(rating_group=100, requested=Units(time=60))]


def granted(a) -> bool:  # type: ignore[no-untyped-def]
    return bool(a.result_code == C.DIAMETER_SUCCESS and a.mscc
                and a.mscc[0].result_code == C.DIAMETER_SUCCESS and a.mscc[0].granted)


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "d"
    provision(data, {"491760000001": {"balance": "5"}})
    srv = start_server(data, "--no-cdr-export")
    yield srv
    srv.stop()


async def test_cli_goes_through_the_engine_and_is_in_force_at_once(server) -> None:  # type: ignore[no-untyped-def]
    data = server.data
    sock = data / wire.SOCKET_NAME
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert not lock_free(data), "the engine must hold the lock while it serves"
    c = await DiameterClient.connect(server.host, server.port)
    try:
        for i in range(5):
            msisdn = f"49176000010{i}"
            r = await asyncio.to_thread(ocs, data, "account", "create", msisdn, "--balance", "0")
            assert r.returncode == 0, r.stderr
            a = await c.ccr(gy_ccr(f"s-{i}", 1, 0, msisdn, mscc=voice))
            assert not granted(a), a  # nothing to spend yet
            r = await asyncio.to_thread(ocs, data, "account", "topup", msisdn, "1.00")
            assert r.returncode == 0 and r.stdout.strip() == f"{msisdn} balance 1.000000", r
            a = await c.ccr(gy_ccr(f"t-{i}", 1, 0, msisdn, mscc=voice))
            assert granted(a), a
            r = await asyncio.to_thread(ocs, data, "account", "suspend", msisdn)
            assert r.returncode == 0, r.stderr
            a = await c.ccr(gy_ccr(f"u-{i}", 1, 0, msisdn, mscc=voice))
            assert not granted(a), a
    finally:
        await c.close()
    shown = ocs(data, "account", "show", "491760000100", "--json")
    assert shown.returncode == 0 and '"status": "suspended"' in shown.stdout, shown


def test_refusals_through_the_engine_change_nothing(server) -> None:  # type: ignore[no-untyped-def]
    data = server.data
    before = account(data, "491760000001")
    for argv, needle in [
        (("account", "topup", "491769999999", "1"), "unknown account"),
        (("account", "create", "491760000001", "--balance", "1"), "already exists"),
        (("account", "create", "491760000002", "--balance", "1", "--plan", "gold"), "plan 'gold'"),
        (("account", "adjust", "491760000001", "1", "--reason", "x", "--currency", "USD"), "USD"),
        (("tariff", "retire", "9"), "no tariff version 9"),
    ]:
        r = ocs(data, *argv)
        assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, (argv, r)
    after = account(data, "491760000001")
    assert (after.balance, after.seq, after.status) == (before.balance, before.seq, before.status)
    assert server.proc.poll() is None


def test_a_bad_client_gets_an_answer_or_a_closed_socket(server) -> None:  # type: ignore[no-untyped-def]
    data = server.data
    assert call(data, "account.nosuch") == {"refused": "unknown command 'account.nosuch'",
                                            "kind": "not_found"}
    answer = call(data, "account.topup", key="k", ident="491760000001", amount=1, colour="red")
    assert isinstance(answer, dict) and "refused" in answer and "colour" in answer["refused"]
    answer = call(data, "account.topup", key="k2", ident="491760000001", amount="ten")
    assert isinstance(answer, dict) and "refused" in answer, answer
    assert "refused" in raw_call(data, wire.pack(["not", "a", "map"]))  # type: ignore[operator]
    assert raw_call(data, struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1") is None  # not msgpack
    assert raw_call(data, struct.pack(">I", wire.MAX_FRAME + 1)) is None  # over the bound
    unhashable = msgpack.packb({(1, 2): 3})  # msgpack, but a map keyed by an array: TypeError
    assert raw_call(data, struct.pack(">I", len(unhashable)) + unhashable) is None
    ping = call(data, "engine.ping")  # and the control plane serves the next client
    assert isinstance(ping, dict) and ping["ok"]["accounts"] >= 1, ping
    assert raw_call(data, struct.pack(">I", 100) + b"short") is None      # EOF inside a frame
    assert account(data, "491760000001").balance == to_micro("5")
    ok = call(data, "account.topup", key="k3", ident="491760000001", amount=to_micro("2"))
    assert ok == {"ok": {"id": "491760000001", "balance": to_micro("7")}}
    again = call(data, "account.topup", key="k3", ident="491760000001", amount=to_micro("2"))
    assert again == ok  # the idempotency key: applied once
    assert account(data, "491760000001").balance == to_micro("7")
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


def test_kill_9_keeps_every_answered_command_and_the_cli_works_without_the_server(tmp_path: Path) -> None:
    data = tmp_path / "d"
    provision(data, {"491760000001": {"balance": "0"}})
    srv = start_server(data, "--no-cdr-export")
    try:
        for i in range(10):
            r = ocs(data, "account", "topup", "491760000001", "0.10", "--idempotency-key", f"t{i}")
            assert r.returncode == 0, r.stderr
        killed = children(srv.proc.pid)
        for pid in killed:  # the engine first: it must not stop cleanly
            os.kill(pid, signal.SIGKILL)
        srv.kill()
        gone(killed)  # SIGKILL takes effect once a process leaves the kernel (an fdatasync, say)
        # the socket file stays behind; the lock went with the engine
        assert (data / wire.SOCKET_NAME).exists() and lock_free(data)
        assert account(data, "491760000001").balance == to_micro("1.00")
        r = ocs(data, "account", "topup", "491760000001", "0.10", "--idempotency-key", "t9")
        assert r.returncode == 0 and "balance 1.000000" in r.stdout, r  # a retry: applied once
        r = ocs(data, "account", "topup", "491760000001", "0.50")
        assert r.returncode == 0 and "balance 1.500000" in r.stdout, r  # on LMDB directly
    finally:
        srv.stop()
    srv = start_server(data, "--no-cdr-export")  # a stale socket file does not stop a restart
    try:
        assert call(data, "account.show", ident="491760000001")["ok"]["account"]["balance"] \
            == to_micro("1.5")  # type: ignore[index]
    finally:
        assert srv.stop() == 0, srv.log()
    assert not (data / wire.SOCKET_NAME).exists()


def test_engine_waits_for_a_command_running_on_lmdb(tmp_path: Path) -> None:
    """A CLI command running on LMDB directly holds the lock shared: a server started meanwhile
    waits for it instead of writing beside it."""
    data = tmp_path / "d"
    provision(data, {"491760000001": {"balance": "0"}})
    fd = wire.open_lock(str(data))
    try:
        assert wire.try_shared(fd)  # as a CLI command on LMDB does
        proc = subprocess.Popen([sys.executable, "-m", "ocs", "serve", "--data", str(data),
                                 "--listen", "127.0.0.1:0", "--no-cdr-export", "--no-api"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(3)
            assert not (data / wire.SOCKET_NAME).exists()
        finally:
            os.close(fd)
            fd = -1
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("OCS ready")
        assert call(data, "account.resolve", ident="491760000001") == {"ok": "491760000001"}
    finally:
        if fd >= 0:
            os.close(fd)
        proc.terminate()
        assert proc.wait(30) == 0


def test_workers_share_the_store_and_the_cli_writes_it(tmp_path: Path) -> None:
    data = tmp_path / "d"
    provision(data, {"491760000001": {"balance": "0"}})
    srv = start_server(data, "--workers", "2", "--no-cdr-export")
    try:
        assert not (data / wire.SOCKET_NAME).exists()
        r = ocs(data, "account", "topup", "491760000001", "1")
        assert r.returncode == 0, r.stderr
        assert account(data, "491760000001").balance == to_micro("1")
    finally:
        assert srv.stop() == 0, srv.log()


def test_frames_round_trip() -> None:
    obj = {"cmd": "x", "args": {"b": b"\x00\xff", "n": -(2**63), "l": [1, "a", None]}}
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire.pack(obj) + wire.pack(1))
        a.shutdown(socket.SHUT_WR)
        assert wire.recv(b) == obj
        assert wire.recv(b) == 1
        assert wire.recv(b) is None
    assert msgpack.unpackb(wire.pack([1])[4:]) == [1]


async def test_a_client_that_never_reads_holds_up_no_one(server) -> None:  # type: ignore[no-untyped-def]
    """A control client pipelines 60,000 requests (about 9 MB of answers, past the 8 MB after
    which the engine stops reading a client) and reads none: another client's command and a CCR
    are answered meanwhile, the engine stays up, and the answers, read at last, are in order."""
    import time
    data = server.data
    addr = wire.Address(str(data))
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        hog.connect(addr.address)
        frames = [wire.pack({"cmd": "account.list", "args": {"limit": 1, "after": f"{i:08d}"}})
                  for i in range(60_000)]
        data_out = b"".join(frames)
        hog.setblocking(False)
        sent, blocked_since = 0, None
        deadline = time.monotonic() + 30
        while sent < len(data_out) and time.monotonic() < deadline:
            try:
                sent += hog.send(data_out[sent:sent + (1 << 16)])
                blocked_since = None
            except BlockingIOError:  # the engine is busy with them, or has stopped reading us
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 2:
                    break
                await asyncio.sleep(0.02)
        started = time.monotonic()
        ping = call(data, "engine.ping")
        assert isinstance(ping, dict) and ping["ok"]["accounts"] == 1, ping
        c = await DiameterClient.connect(server.host, server.port)
        try:
            a = await c.ccr(gy_ccr("hog-1", 1, 0, "491760000001", mscc=voice))
            assert a.result_code == C.DIAMETER_SUCCESS, a
        finally:
            await c.close()
        assert time.monotonic() - started < 10
        hog.setblocking(True)
        hog.settimeout(30)
        for i in range(3):  # the first answers, in order: a page after "0000000i" each
            answer = wire.recv(hog)
            assert isinstance(answer, dict) and "ok" in answer, answer
            assert [a["id"] for a in answer["ok"]] == ["491760000001"], (i, answer)
    finally:
        hog.close()
        addr.close()
    assert server.proc.poll() is None
