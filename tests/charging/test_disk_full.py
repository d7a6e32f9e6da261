"""A full disk is a state, not an error per request: the real server on a small tmpfs.

While LMDB cannot write, every charging request gets a transient 3004 (3002 when a commit's sync
failed) so a gateway fails over to its other OCS, never 5012; the log says so once, not once per
request; when space comes back the next request is served, with no restart; nothing answered
2001 is lost (reconcile) after SIGTERM or kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from gy_requests import ccr
from server_harness import provision, start_server

from balance.store import open_store
from ocs.billing.export import read_all
from ocs.billing.export.exporter import last_cdr_id
from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import CCR, MSCCRequest, Units

MIB = 1 << 20
_ids = itertools.count(1)


@contextlib.contextmanager
def small_fs(path: Path, size_mb: int):  # type: ignore[no-untyped-def]
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = path / "ballast"
    chunk = b"\0" * MIB
    with ballast.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            os.fsync(f.fileno())
    return ballast


def ccr_i(sid: str, msisdn: str) -> CCR:
    return ccr(sid, 1, 0, msisdn, [MSCCRequest(rating_group=200, requested=Units(total_octets=MIB))])


def ccr_t(sid: str, msisdn: str) -> CCR:
    return ccr(sid, 3, 1, msisdn, [MSCCRequest(rating_group=200, used=[Units(total_octets=MIB)])])


async def session(c: DiameterClient, msisdn: str) -> list[int]:
    sid = f"pgw.full;{next(_ids)};{'x' * 300}"  # long ids: each session needs fresh pages
    a = await c.ccr(ccr_i(sid, msisdn))
    codes = [a.result_code]
    if a.result_code == C.DIAMETER_SUCCESS:
        codes.append((await c.ccr(ccr_t(sid, msisdn))).result_code)
    return codes


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
async def test_full_disk_answers_3004_logs_once_and_recovers(tmp_path, stop) -> None:  # type: ignore[no-untyped-def]
    with small_fs(tmp_path / "fs", 40) as fs:
        data = fs  # the server's log goes beside it, off the small file system
        accounts = {f"4917{i:08d}": {"balance": "1000"} for i in range(20)}
        provision(data, accounts)
        srv = start_server(data)
        ballast = None
        try:
            c = await DiameterClient.connect(srv.host, srv.port)
            ids = itertools.cycle(accounts)
            assert set(await session(c, next(ids))) == {C.DIAMETER_SUCCESS}
            ballast = fill(fs)
            while_full: list[int] = []
            for _ in range(3000):  # until the store has had to grow into the full disk
                while_full += await session(c, next(ids))
                if while_full.count(C.DIAMETER_TOO_BUSY) >= 20:
                    break
            deadline = time.monotonic() + 3  # full for a while: the CDR export meets it too
            while time.monotonic() < deadline:
                while_full += await session(c, next(ids))
            assert C.DIAMETER_UNABLE_TO_COMPLY not in while_full, while_full
            assert set(while_full) <= {C.DIAMETER_SUCCESS, C.DIAMETER_TOO_BUSY,
                                       C.DIAMETER_UNABLE_TO_DELIVER}, set(while_full)
            assert while_full.count(C.DIAMETER_TOO_BUSY) >= 20, "the disk never filled up"
            ballast.unlink()
            ballast = None
            # Space is back: the very next sessions are served, no restart.
            for _ in range(5):
                assert set(await session(c, next(ids))) == {C.DIAMETER_SUCCESS}
            await c.close()
        finally:
            if ballast is not None:
                ballast.unlink()
            if stop == "kill":
                srv.kill()
            else:
                assert srv.stop() == 0, srv.log()
        log = srv.log()
        assert "Traceback" not in log, log[-3000:]
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert 1 <= len(errors) <= 4, errors   # the store's line, the export's (if it met it)
        assert "the store writes again" in log
        if stop == "kill":  # a restart replays nothing twice and loses nothing answered
            srv = start_server(data)
            assert srv.stop() == 0, srv.log()
        rec = subprocess.run([sys.executable, "-m", "ocs", "reconcile", "--data", str(data)],
                             capture_output=True, text=True, timeout=120)
        assert rec.returncode == 0, rec.stdout + rec.stderr


def cdr_ids_in_files(root: Path) -> Counter[int]:
    """Every row of every complete CDR file (parsing each: a torn row raises)."""
    return Counter(c.cdr_id for _, c in read_all(root))


def stored_cdrs(data: Path) -> int:
    store = open_store(data)
    try:
        with store.read() as view:
            return last_cdr_id(view)
    finally:
        store.close()


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
async def test_full_disk_with_cdrs_pending_export_exports_each_once(tmp_path, stop) -> None:  # type: ignore[no-untyped-def]
    """The CDR export meets the full disk on its own files (1 s rotation): one line when it stops,
    one when it writes again, and after SIGTERM (or kill -9 and a restart) every CDR id is in exactly
    one file, no torn row, and reconcile --cdrs agrees."""
    conf = tmp_path / "ocs.toml"   # off the small file system, like the server's log
    conf.write_text("cdr_rotate_seconds = 1\ncdr_rotate_bytes = 65536\n")
    with small_fs(tmp_path / "fs", 40) as fs:
        data = fs
        accounts = {f"4917{i:08d}": {"balance": "1000"} for i in range(20)}
        provision(data, accounts)
        srv = start_server(data, "--config", str(conf))
        ballast = None
        try:
            c = await DiameterClient.connect(srv.host, srv.port)
            ids = itertools.cycle(accounts)
            for _ in range(60):  # CDRs, some of them pending export when the disk fills
                assert set(await session(c, next(ids))) == {C.DIAMETER_SUCCESS}
            ballast = fill(fs)
            while_full: list[int] = []
            deadline = time.monotonic() + 4  # several export runs and rotations meet the full disk
            for _ in range(20000):
                while_full += await session(c, next(ids))
                if time.monotonic() > deadline and while_full.count(C.DIAMETER_TOO_BUSY) >= 20:
                    break
            assert C.DIAMETER_UNABLE_TO_COMPLY not in while_full, set(while_full)
            assert set(while_full) <= {C.DIAMETER_SUCCESS, C.DIAMETER_TOO_BUSY,
                                       C.DIAMETER_UNABLE_TO_DELIVER}, set(while_full)
            assert while_full.count(C.DIAMETER_TOO_BUSY) >= 20, "the disk never filled up"
            assert "CDR export cannot write" in srv.log(), srv.log()[-3000:]
            ballast.unlink()
            ballast = None
            for _ in range(5):  # space is back: served at once, no restart
                assert set(await session(c, next(ids))) == {C.DIAMETER_SUCCESS}
            for _ in range(100):  # the export's next run (once a second) writes again
                if "CDR export works again" in srv.log():
                    break
                await asyncio.sleep(0.1)
            assert "CDR export works again" in srv.log(), srv.log()[-3000:]
            for _ in range(20):
                assert set(await session(c, next(ids))) == {C.DIAMETER_SUCCESS}
            await c.close()
        finally:
            if ballast is not None:
                ballast.unlink()
            if stop == "kill":
                srv.kill()
            else:
                assert srv.stop() == 0, srv.log()
        log = srv.log()
        assert "Traceback" not in log, log[-3000:]
        lines = log.splitlines()
        errors = [line for line in lines if " ERROR " in line]
        assert 2 <= len(errors) <= 4, errors
        export_lines = [line for line in lines if "CDR export" in line]
        assert 2 <= len(export_lines) <= 4, export_lines   # not one a second
        if stop == "kill":  # the restart finishes what the killed export left, exactly once
            srv = start_server(data, "--config", str(conf))
            assert srv.stop() == 0, srv.log()
            assert "Traceback" not in srv.log(), srv.log()
        total = stored_cdrs(data)
        assert total > 60
        seen = cdr_ids_in_files(data / "cdr")
        assert seen == Counter(range(1, total + 1)), {k: n for k, n in seen.items() if n != 1}
        assert not list((data / "cdr").glob(".*.part"))
        rec = subprocess.run([sys.executable, "-m", "ocs", "reconcile", "--data", str(data),
                              "--cdrs", str(data / "cdr")], capture_output=True, text=True, timeout=120)
        assert rec.returncode == 0, rec.stdout + rec.stderr
