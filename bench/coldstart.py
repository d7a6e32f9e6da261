"""`python -m bench.coldstart`: memory, start-up and kill -9 recovery with N accounts and M open sessions.

Issue #14's in-memory engine must hold 1,000,000 accounts and 100,000 open sessions in RSS <= 2 GiB
and be answering again <= 15 s after kill -9. Today's engine keeps no state in memory (every batch
reads and writes LMDB), so this run's figures are the baseline it is compared with. One run:
1. provision N accounts, each with its MSISDN as an alias (the CCRs carry the MSISDN, so every
   request resolves through the alias db as an operator's would), in large write transactions
   straight into a fresh data dir, and the bench tariff;
2. open M data sessions with CCR-Is through the engine's own batch path in this process
   (InProcessEngine: no sockets, so M sessions take seconds, not a load run), one account each;
3. evict data.mdb from the page cache (as after a reboot), start `ocs serve`; time from process
   start to the first answered CCR-U of an open session (a real Diameter client that retries
   connecting until the port is up);
4. one CCR-U for every open session (every session record and its account touched), then the
   RSS and peak RSS of the engine process and of the front (/proc/PID/status);
5. a closed-loop load run, and in its middle kill -9 of the front and the engine (both stopped
   first, so they die at one instant); restart on the same data dir (page cache kept, as after
   a process crash) and time from the restart to the first answered CCR-U again;
6. stop, check money is conserved (bench/conservation.py) and that `ocs reconcile` exits 0.
Sessions never go stale during the run (--session-timeout is set far beyond it), so all M stay
open throughout. Every process started is stopped by its pid, every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import client, servers, wire
from bench.client import LoadSpec, Usage
from bench.conservation import Conservation, check
from bench.peer_pydiameter import client_host
from bench.provision import DEFAULT_TARIFF, load_tariff_once
from bench.report import markdown
from bench.servers import alive, cmdline
from bench.templates import Template, make_templates, new_run_id, session_tail
from bench.workload import DATA, INITIAL, SERVICES, UPDATE, account_id

T = TypeVar("T")
SUCCESS, TOO_BUSY, UNABLE_TO_DELIVER = 2001, 3004, 3002
BALANCE = 10**12                  # micro-units per account: never the limit in a run
PER_TXN = 20_000                  # accounts per provisioning write transaction
CCR_I_BATCH = 500                 # CCR-Is per in-process batch (one write txn each)
SESSION_TIMEOUT = 7 * 86400       # no open session goes stale while the bench runs
USED = 3 * 1_048_576              # octets each CCR-U of an open session reports (0.03 EUR)
HOST_BASE = "cold.client"         # Origin-Host c0000.cold.client... of the open sessions' peers
REALM = "bench"
SERVICE = SERVICES[DATA]


def internal_id(index: int) -> str:
    """The index-th account's id; the CCRs name it by its alias, workload.account_id(index)."""
    return f"acct-{index:08d}"


@dataclass(slots=True)
class OpenSession:
    conn: int                 # which client connection (Origin-Host) owns it
    tail: bytes               # per-session part of the Session-Id
    account: int
    start: int                # unix seconds of its CCR-I
    granted: int              # last grant in octets
    number: int = 1           # next CC-Request-Number
    used: int = 0             # octets in reports answered with success
    uncertain: int = 0        # octets in reports whose answer never came


@dataclass(slots=True)
class Figure:
    name: str
    value: float
    unit: str
    what: str


@dataclass(slots=True)
class Report:
    accounts: int
    sessions: int
    figures: list[Figure] = field(default_factory=list)
    conservation: dict[str, Any] = field(default_factory=dict)
    reconcile_exit: int = -1
    reconcile_output: str = ""
    server_exits: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, what: str) -> None:
        self.figures.append(Figure(name, value, unit, what))

    def to_dict(self) -> dict[str, Any]:
        return {"accounts": self.accounts, "sessions": self.sessions,
                "figures": {f.name: {"value": f.value, "unit": f.unit, "what": f.what}
                            for f in self.figures},
                "conservation": self.conservation, "reconcile_exit": self.reconcile_exit,
                "reconcile_output": self.reconcile_output, "server_exits": self.server_exits,
                "notes": self.notes}


# -- 1. accounts ------------------------------------------------------------------------------

def provision_accounts(data: Path, accounts: int, *, progress: bool) -> float:
    """Create the accounts (balance.ops.create_account, alias = MSISDN) and the bench tariff;
    seconds taken. Not bench.provision.provision: that makes no alias and commits 2,000 accounts
    per transaction; here each durable commit carries PER_TXN."""
    from balance.ops import create_account
    from balance.store import Tx, open_store
    from rating.tariff import load_tariff

    currency = load_tariff(DEFAULT_TARIFF).currency
    t0 = time.perf_counter()
    store = open_store(data, map_size=_map_size(accounts))
    try:
        load_tariff_once(store, DEFAULT_TARIFF.read_text(), str(DEFAULT_TARIFF))
        for lo in range(0, accounts, PER_TXN):
            hi = min(accounts, lo + PER_TXN)

            def create(tx: Tx, lo: int = lo, hi: int = hi) -> None:
                for i in range(lo, hi):
                    create_account(tx, f"cold-create:{i}", account_id=internal_id(i),
                                   currency=currency, balance=BALANCE, aliases=[account_id(i)])

            store.execute(create)
            if progress and (hi % 100_000 == 0 or hi == accounts):
                rate = hi / (time.perf_counter() - t0)
                print(f"  provisioned {hi:,} accounts ({rate:,.0f}/s)", file=sys.stderr)
    finally:
        store.close()
    return time.perf_counter() - t0


def _map_size(accounts: int) -> int:
    """A map the accounts fit in (about 550 bytes each with alias, journal and idempotency key),
    so the 20,000-account transactions are not aborted and re-run while the map doubles."""
    size = 256 << 20
    while size < accounts * 1100:
        size *= 2
    return size


def read_balances(data: Path, accounts: int) -> list[int]:
    """Balance (micro-units, reservations not deducted) of each account, in one read txn."""
    from balance.store import open_store

    store = open_store(data, readonly=True)
    try:
        with store.read() as view:
            out = []
            for i in range(accounts):
                acct = view.find_account(internal_id(i))
                out.append(acct.balance if acct is not None else 0)
            return out
    finally:
        store.close()


# -- 2. open sessions -------------------------------------------------------------------------

def conn_templates(connections: int, run_id: str) -> list[dict[tuple[str, int], Template]]:
    """Per connection: its templates, Origin-Host client_host(conn) in both CER and Session-Id."""
    return [make_templates(origin_host=client_host(c, HOST_BASE), origin_realm=REALM,
                           destination_realm="ocs", run_id=run_id) for c in range(connections)]


def open_sessions(data: Path, count: int, templates: list[dict[tuple[str, int], Template]],
                  *, progress: bool) -> tuple[list[OpenSession], float]:
    """CCR-I of `count` data sessions, session j on account j, in batches as the engine runs
    them (durable commits); (the sessions, seconds taken)."""
    from ocs.charging.inprocess import InProcessEngine
    from ocs.charging.settings import ChargingSettings
    from ocs.config import ServeConfig

    settings = ChargingSettings.of(ServeConfig(data=str(data), session_timeout=SESSION_TIMEOUT))
    out: list[OpenSession] = []
    conns = len(templates)
    t0 = time.perf_counter()
    with InProcessEngine(data, settings=settings, sync=True) as engine:
        for lo in range(0, count, CCR_I_BATCH):
            batch = []
            now = int(time.time())
            for j in range(lo, min(count, lo + CCR_I_BATCH)):
                conn = j % conns
                tail = session_tail(conn, j)
                tpl = templates[conn][(DATA, INITIAL)]
                batch.append(bytes(tpl.render(j + 1, j + 1, tail, 0, account_id(j).encode(), 0)))
                out.append(OpenSession(conn, tail, j, now, 0))
            for k, answer in enumerate(engine.batch(batch)):
                result, mscc, granted = wire.scan_answer(answer)
                if result != SUCCESS or mscc not in (0, SUCCESS) or granted <= 0:
                    raise RuntimeError(f"CCR-I of session {lo + k} answered {result}/{mscc}")
                out[lo + k].granted = granted
            done = len(out)
            if progress and (done % 20_000 == 0 or done == count):
                rate = done / (time.perf_counter() - t0)
                print(f"  opened {done:,} sessions ({rate:,.0f}/s)", file=sys.stderr)
    return out, time.perf_counter() - t0


# -- 3. the server ----------------------------------------------------------------------------

def _arun(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop, as bench.client runs: the client's CPU share stays small beside the server's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def free_port() -> int:
    """A port free now on 127.0.0.1: the probe must know it before the server prints it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_argv(data: Path, port: int) -> list[str]:
    argv = servers.ocs_serve_argv(data, extra=["--session-timeout", str(SESSION_TIMEOUT)])
    return [f"127.0.0.1:{port}" if a == "127.0.0.1:0" else a for a in argv]


def children(pid: int) -> list[int]:
    """Child pids of every thread of pid (a child is listed under the thread that forked it)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def engine_pid(front: int) -> int:
    """The front's `python -m ocs.charging.engine` child."""
    found = [p for p in children(front) if "-m ocs.charging.engine" in cmdline(p)]
    if len(found) != 1:
        raise servers.ServerError(f"engine processes under the front {front}: {found}")
    return found[0]


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon, RssFile of a process, in bytes. RssFile counts the LMDB
    map's pages this process has touched (shared with the page cache, not its own heap)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
    return out


@dataclass(slots=True)
class Started:
    server: servers.Launched
    engine: int
    first_answer: float       # seconds from process start to the first answered CCR-U
    ready_line: float         # seconds from process start to its `OCS ready` line


def start_and_probe(data: Path, log_path: Path, probe: OpenSession,
                    templates: list[dict[tuple[str, int], Template]], timeout: float) -> Started:
    """Start `ocs serve` and, from the same instant, poll it with a Diameter client until one
    CCR-U of `probe` (no usage: no money at stake) is answered with success."""
    port = free_port()
    box: dict[str, Any] = {}
    t0 = time.perf_counter()

    def launch() -> None:
        try:
            box["server"] = servers.launch("ocs serve", serve_argv(data, port),
                                           ready_timeout=timeout, log_path=log_path)
            box["ready"] = time.perf_counter() - t0
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=launch, name="coldstart-launch", daemon=True)
    thread.start()
    try:
        answered = _arun(_probe(port, probe, templates[probe.conn], t0 + timeout,
                                      lambda: "error" in box))
    except TimeoutError:
        answered = None
    thread.join(timeout)
    server: servers.Launched | None = box.get("server")
    if "error" in box:
        raise box["error"]
    if server is None or answered is None:
        if server is not None:
            _kill_all(server)
        raise servers.ServerError(f"no answered CCR-U within {timeout:.0f} s of the start")
    try:
        engine = engine_pid(server.pid)
    except servers.ServerError:
        _kill_all(server)
        raise
    return Started(server, engine, answered - t0, box["ready"])


async def _probe(port: int, sess: OpenSession, tpl: dict[tuple[str, int], Template],
                 deadline: float, failed: Any) -> float:
    """perf_counter() when a CCR-U of sess was answered 2001; retries connect and request."""
    from ocs.client import DiameterClient

    subscriber = account_id(sess.account).encode()
    hbh = 1
    while time.perf_counter() < deadline and not failed():
        try:
            peer = await asyncio.wait_for(
                DiameterClient.connect("127.0.0.1", port, client_host(sess.conn, HOST_BASE), REALM), 5.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.02)
            continue
        try:
            hbh += 1
            frame = bytes(tpl[(DATA, UPDATE)].render(hbh, hbh, sess.tail, sess.number,
                                                     subscriber, 0))
            result, mscc, granted = wire.scan_answer(await peer.request_raw(frame, 10.0))
            if result == SUCCESS and mscc in (0, SUCCESS):
                at = time.perf_counter()
                sess.number += 1
                sess.granted = granted if granted > 0 else sess.granted
                return at
        except (ConnectionError, TimeoutError):
            pass  # same number again: a retransmission, and this request reports no usage
        finally:
            await peer.close()
        await asyncio.sleep(0.02)
    raise TimeoutError


def _kill_front(server: servers.Launched) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(10)


def _kill_all(server: servers.Launched) -> None:
    """The front and every engine under it, by pid (an error path: no figure depends on it)."""
    engines = [p for p in children(server.pid) if "-m ocs.charging.engine" in cmdline(p)]
    _kill_front(server)
    for pid in engines:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill9(started: Started, timeout: float = 30.0) -> None:
    """kill -9 the whole server at one instant, as a crash of its host or cgroup would: SIGSTOP
    the front, then the engine, then SIGKILL both, by pid. Stopped first, neither sees the other
    die: the engine cannot notice the reset socketpair and wind down, and the front cannot
    answer 3002 for what the engine may have committed; every request in flight is left
    unanswered (the load client counts it as uncertain)."""
    engine = started.engine if "ocs.charging.engine" in cmdline(started.engine) else 0
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in (started.server.pid, engine):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        started.server.proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while alive(started.engine) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(started.engine) or started.server.proc.poll() is None:
        raise servers.ServerError(f"server {started.server.pid} / engine {started.engine} still "
                                  f"alive {timeout:.0f} s after kill -9")


def evict_page_cache(path: Path) -> None:
    """Drop this file's pages from the page cache (fsync, then POSIX_FADV_DONTNEED), so the next
    start reads the store from disk as after a reboot; other files and processes are untouched."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def stop_quietly(started: Started | None) -> None:
    """For the error path: whatever is left of a server, killed by pid."""
    if started is None:
        return
    if started.server.proc.poll() is None:
        _kill_front(started.server)
    if alive(started.engine) and "ocs.charging.engine" in cmdline(started.engine):
        with contextlib.suppress(ProcessLookupError):
            os.kill(started.engine, signal.SIGKILL)


# -- 4. one CCR-U per open session ------------------------------------------------------------

@dataclass(slots=True)
class Touched:
    answered: int = 0
    retried: int = 0          # 3004 / 3002 answers, sent again
    timeouts: int = 0
    seconds: float = 0.0


async def touch_all(port: int, sessions: list[OpenSession],
                    templates: list[dict[tuple[str, int], Template]], *, window: int,
                    timeout: float, deadline: float) -> Touched:
    """One CCR-U (USED octets, capped by the grant) for every session, each connection with
    `window` requests in flight; a 3004 / 3002 (never applied by the engine) is sent again."""
    from ocs.client import DiameterClient

    res = Touched()
    queues: list[deque[OpenSession]] = [deque() for _ in templates]
    for s in sessions:
        queues[s.conn].append(s)
    peers = [await DiameterClient.connect("127.0.0.1", port, client_host(c, HOST_BASE), REALM)
             for c in range(len(templates))]
    hbh = [0x1000] * len(templates)

    async def worker(c: int) -> None:
        peer, queue, tpl = peers[c], queues[c], templates[c][(DATA, UPDATE)]
        while queue and time.perf_counter() < deadline:
            s = queue.popleft()
            used = min(USED, s.granted)
            hbh[c] += 1
            frame = bytes(tpl.render(hbh[c], hbh[c], s.tail, s.number,
                                     account_id(s.account).encode(), used))
            try:
                result, mscc, granted = wire.scan_answer(await peer.request_raw(frame, timeout))
            except TimeoutError:
                res.timeouts += 1
                s.uncertain += used
                s.number += 1
                continue
            if result in (TOO_BUSY, UNABLE_TO_DELIVER):
                res.retried += 1
                queue.append(s)
                await asyncio.sleep(0.01)
                continue
            s.number += 1
            if result != SUCCESS or mscc not in (0, SUCCESS):
                raise RuntimeError(f"CCR-U answered {result}/{mscc}")
            s.used += used
            s.granted = granted if granted > 0 else s.granted
            res.answered += 1

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in range(len(templates)) for _ in range(window)))
    finally:
        res.seconds = time.perf_counter() - t0
        for peer in peers:
            await peer.close()
    return res


# -- the run ----------------------------------------------------------------------------------

def run(work: Path, *, accounts: int, sessions: int, connections: int, window: int,
        kill_after: float, load_connections: int, timeout: float, progress: bool) -> Report:
    from rating.rater import rater_for
    from rating.tariff import load_tariff

    data = work / "data"
    rep = Report(accounts, sessions)

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr)

    say(f"provisioning {accounts:,} accounts with an alias each ...")
    secs = provision_accounts(data, accounts, progress=progress)
    rep.add("provision_s", round(secs, 2), "s",
            f"create {accounts:,} accounts + MSISDN aliases and the tariff ({accounts / secs:,.0f}/s)")
    before = read_balances(data, accounts)

    say(f"opening {sessions:,} sessions ...")
    templates = conn_templates(connections, new_run_id())
    opened, secs = open_sessions(data, sessions, templates, progress=progress)
    rep.add("open_sessions_s", round(secs, 2), "s",
            f"CCR-I of {sessions:,} sessions, in-process batches of {CCR_I_BATCH} ({sessions / secs:,.0f}/s)")
    rep.add("data_mdb_bytes", (data / "data.mdb").stat().st_size, "B", "size of the LMDB file")

    usage_runs: list[list[Usage]] = []
    started: Started | None = None
    try:
        say("starting the server (data.mdb evicted from the page cache) ...")
        evict_page_cache(data / "data.mdb")
        started = start_and_probe(data, work / "serve-1.log", opened[0], templates, timeout)
        rep.add("start_to_first_answer_s", round(started.first_answer, 3), "s",
                "`ocs serve` start, store not in the page cache -> first CCR-U of an open "
                "session answered 2001")
        rep.add("start_to_ready_line_s", round(started.ready_line, 3), "s",
                "`ocs serve` start, store not in the page cache -> its `OCS ready` line")

        say(f"one CCR-U for each of the {sessions:,} open sessions ...")
        touched = _arun(touch_all(started.server.port, opened, templates, window=window,
                                        timeout=timeout, deadline=time.perf_counter() + max(120.0, sessions / 100)))
        if touched.answered + touched.timeouts < sessions:
            raise RuntimeError(f"only {touched.answered} of {sessions} open sessions answered in time")
        rep.add("touch_all_s", round(touched.seconds, 2), "s",
                f"a CCR-U of every open session, {connections} conns x {window} in flight "
                f"({touched.answered / touched.seconds:,.0f}/s, {touched.retried} 3004 resent, "
                f"{touched.timeouts} timeouts)")
        for who, pid in (("engine", started.engine), ("front", started.server.pid)):
            mem = memory(pid)
            rep.add(f"{who}_rss_bytes", mem["VmRSS"], "B", f"{who} VmRSS after every session answered")
            rep.add(f"{who}_hwm_bytes", mem["VmHWM"], "B", f"{who} VmHWM (peak RSS) so far")
            rep.add(f"{who}_rss_anon_bytes", mem["RssAnon"], "B", f"{who} RssAnon (its heap)")
            rep.add(f"{who}_rss_file_bytes", mem["RssFile"], "B",
                    f"{who} RssFile (LMDB map pages and code it touched)")

        say(f"load run, kill -9 after {kill_after:.1f} s ...")
        spec = LoadSpec(connections=load_connections, in_flight=8, duration=kill_after + timeout + 30,
                        warmup=0.0, timeout=timeout, accounts=accounts, progress=False,
                        label="load until kill -9")
        kill_error: list[BaseException] = []

        def kill(victim: Started = started) -> None:
            try:
                kill9(victim)
            except BaseException as exc:  # re-raised in this thread
                kill_error.append(exc)

        killer = threading.Timer(kill_after, kill)
        killer.start()
        try:
            load = client.run(started.server.host, started.server.port, spec)
        finally:
            killer.join(timeout + 60)
        if kill_error:
            raise kill_error[0]
        rep.server_exits.append(started.server.proc.returncode)
        usage_runs.append(load.usage)
        if alive(started.engine) or started.server.proc.poll() is None:
            raise servers.ServerError("the server outlived its kill -9")
        rep.add("answered_before_kill", load.answered, "",
                f"load-run answers before kill -9 ({load.timeouts} left unanswered)")

        say("restarting on the same data dir ...")
        started = start_and_probe(data, work / "serve-2.log", opened[-1], templates, timeout)
        rep.add("recovery_s", round(started.first_answer, 3), "s",
                "restart after kill -9 (page cache kept, as after a process crash) -> first "
                "CCR-U of an open session answered 2001")
        rep.add("recovery_ready_line_s", round(started.ready_line, 3), "s",
                "restart after kill -9 -> its `OCS ready` line")
        mem = memory(started.engine)
        rep.add("engine_rss_after_recovery_bytes", mem["VmRSS"], "B",
                "engine VmRSS at its first answer after the restart")
        rep.server_exits.append(servers.stop(started.server, timeout=60))
        started = None
    finally:
        stop_quietly(started)

    usage = [Usage(s.account, SERVICE.rating_group, SERVICE.unit, s.used, s.start, s.uncertain)
             for s in opened if s.used or s.uncertain]
    for run_usage in usage_runs:
        usage += run_usage
    cons: Conservation = check(before, read_balances(data, accounts), usage,
                               rater_for(load_tariff(DEFAULT_TARIFF), 0))
    rep.conservation = cons.to_dict()
    rep.notes.append(cons.describe())
    rec = subprocess.run([sys.executable, "-m", "ocs", "reconcile", "--data", str(data),
                          "--cdrs", str(data / "cdr")], capture_output=True, text=True,
                         timeout=max(300.0, accounts / 2000))
    rep.reconcile_exit = rec.returncode
    rep.reconcile_output = (rec.stdout + rec.stderr)[-3000:]
    return rep


def _human(f: Figure) -> str:
    if f.unit == "B":
        return f"{f.value / (1 << 20):,.1f} MiB"
    if f.unit == "s":
        return f"{f.value:,.3f} s"
    return f"{f.value:,.0f}"


def table(rep: Report) -> str:
    rows = [(f.name, _human(f), f.what) for f in rep.figures]
    rows.append(("conservation", "OK" if rep.conservation.get("ok") else "MISMATCH",
                 "money debited == the tariff's price of the answered usage"))
    rows.append(("reconcile", f"exit {rep.reconcile_exit}", "`ocs reconcile --cdrs` after the run"))
    return markdown(("figure", "value", "what it measures"), rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accounts", type=int, default=1_000_000)
    p.add_argument("--sessions", type=int, default=100_000, help="open sessions (<= accounts)")
    p.add_argument("--connections", type=int, default=4, help="peers the open sessions belong to")
    p.add_argument("--window", type=int, default=32, help="CCR-Us in flight per connection")
    p.add_argument("--kill-after", type=float, default=3.0, help="seconds into the load run")
    p.add_argument("--load-connections", type=int, default=8)
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a start, a request or a stop may take")
    p.add_argument("--json", type=Path, default=Path("ocs-coldstart.json"), help="result file")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the data dir and logs go (must not exist; default: a temp dir)")
    p.add_argument("--keep-data", action="store_true", help="keep the data dir and logs")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.sessions <= args.accounts or args.connections < 1 or args.window < 1 \
            or args.kill_after <= 0 or args.load_connections < 1 or args.timeout <= 0:
        print("bench: error: want 1 <= --sessions <= --accounts, --connections, --window and "
              "--load-connections >= 1, --kill-after and --timeout > 0", file=sys.stderr)
        return 2
    if args.workdir is not None:
        if args.workdir.exists():
            print(f"bench: error: {args.workdir} exists", file=sys.stderr)
            return 2
        args.workdir.mkdir(parents=True)
        work = args.workdir
    else:
        work = Path(tempfile.mkdtemp(prefix="ocs-coldstart-"))
    try:
        rep = run(work, accounts=args.accounts, sessions=args.sessions,
                  connections=args.connections, window=args.window, kill_after=args.kill_after,
                  load_connections=args.load_connections, timeout=args.timeout,
                  progress=not args.no_progress)
    except (servers.ServerError, RuntimeError, ConnectionError, OSError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep_data or args.workdir is not None:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rep))
    for note in rep.notes:
        print(note)
    args.json.write_text(json.dumps({"argv": sys.argv, **rep.to_dict()}, indent=1))
    print(f"\nresults: {args.json}")
    if not rep.conservation.get("ok") or rep.reconcile_exit != 0 or rep.server_exits[-1:] != [0]:
        print(f"conservation, reconcile or the final stop FAILED:\n{rep.reconcile_output}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
