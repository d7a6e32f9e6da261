"""Kill -9 chaos: the engine, the front, or the front mid-shutdown dies at a random instant under load.

Why: answers leave only once their debit is durable, a retransmission (T flag) gets the answer first
sent, the sweeper closes what a dead gateway left open, and CDR export survives a crash mid-file.
Each has its own test; this one checks that they hold together when a process dies at an instant
nobody chose. One seeded round per kill target: provision, serve, load over 6 connections, kill,
restart on the same data dir, retransmit every request left without an answer, let the sweeper
close the open sessions, stop with SIGTERM, then check:
- `ocs reconcile --cdrs` exits 0;
- per session, the ledger debited exactly the price of the usage the client saw acknowledged;
- the CDR amounts in the exported files add up to the ledger's debits;
- every CDR id is in exactly one file row, none missing;
- no account has money reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from server_harness import RunningServer, provision, start_server

from balance.store import open_store
from bench.servers import alive, cmdline
from ocs.billing import cdr as cdrs
from ocs.billing.cdr.files import read_all
from ocs.billing.reconcile import DEBIT_KINDS
from ocs.charging.counters import open_sessions
from ocs.client import DiameterClient
from protocol.records import CCR, MSCCRequest, Units

ACCOUNTS = [f"49172000{i:04d}" for i in range(40)]
VOICE, DATA, SMS = 100, 200, 300
PRICE = {VOICE: (60, 10_000), DATA: (1_048_576, 10_000), SMS: (1, 50_000)}  # increment, micro
INITIAL, UPDATE, TERMINATION, EVENT = 1, 2, 3, 4
TRANSIENT = (3002, 3004)  # UNABLE_TO_DELIVER, TOO_BUSY: the gateway retransmits
CONNECTIONS, GATEWAYS_PER_CONNECTION, SESSIONS_PER_GATEWAY = 6, 4, 2000
CONFIG = ('sweep_interval = 0.5\ncdr_rotate_seconds = 1\ncdr_rotate_bytes = 20000\n'
          'cdr_format = "csv"\n')
FLAGS = ("--session-timeout", "3", "--validity-time", "2")


def cost(rating_group: int, units: int) -> int:
    """Micro-units the harness tariff charges for a session's cumulative usage."""
    increment, price = PRICE[rating_group]
    return math.ceil(units / increment) * price


def units(rating_group: int, n: int) -> Units:
    if rating_group == VOICE:
        return Units(time=n)
    if rating_group == DATA:
        return Units(total_octets=n)
    return Units(service_specific_units=n)


@dataclass
class Request:
    ccr: CCR
    ids: tuple[int, int]
    used: int
    result: int | None = None  # None: no answer (yet)


@dataclass
class Session:
    sid: str
    account: str
    rating_group: int
    requests: list[Request] = field(default_factory=list)

    def acknowledged_cost(self) -> int:
        return cost(self.rating_group, sum(r.used for r in self.requests if r.result == 2001))


class Load:
    """Gateways opening, updating and terminating (or abandoning) sessions, and sending SMS events."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sessions: list[Session] = []
        self.stopped = False

    async def send(self, client: DiameterClient, sess: Session, rtype: int, number: int,
                   ask: int, used: int) -> bool:
        rg = sess.rating_group
        mscc = MSCCRequest(rating_group=rg, requested=units(rg, ask) if ask else None,
                           used=[units(rg, used)] if used else [])
        ccr = CCR(session_id=sess.sid, destination_realm="test",
                  service_context_id="32251@3gpp.org", request_type=rtype, request_number=number,
                  subscription_ids=[(0, sess.account)], mscc=[mscc])
        req = Request(ccr, client.next_ids(), used)
        sess.requests.append(req)
        try:
            req.result = (await client.ccr(ccr, ids=req.ids, timeout=8)).result_code
        except (ConnectionError, TimeoutError):
            return False
        return req.result == 2001

    async def gateway(self, client: DiameterClient, name: str) -> None:
        rng = random.Random(self.rng.random())
        for n in range(SESSIONS_PER_GATEWAY):
            if self.stopped or client.closed.is_set():
                return
            kind = rng.random()
            rg = SMS if kind < 0.2 else VOICE if kind < 0.6 else DATA
            sess = Session(f"pgw;{name};{n}", rng.choice(ACCOUNTS), rg)
            self.sessions.append(sess)
            if rg == SMS:
                await self.send(client, sess, EVENT, 0, 1, 1)
                continue
            ask, most = (300, 180) if rg == VOICE else (10_000_000, 5_000_000)
            if not await self.send(client, sess, INITIAL, 0, ask, 0):
                continue
            updates = rng.randint(1, 4)
            for i in range(1, updates + 1):
                if not await self.send(client, sess, UPDATE, i, ask, rng.randint(1, most)):
                    break
            else:
                if rng.random() < 0.75:  # the rest are abandoned: the sweeper closes them
                    await self.send(client, sess, TERMINATION, updates + 1, 0, rng.randint(1, most))


def child_pids(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def serve(data: Path, config: Path,
          started: list[tuple[RunningServer, int]]) -> tuple[RunningServer, int]:
    """Start `ocs serve`; returns it and its engine's pid, both recorded in `started`."""
    srv = start_server(data, "--config", str(config), *FLAGS)
    engines = [p for p in child_pids(srv.proc.pid) if "-m ocs.charging.engine" in cmdline(p)]
    started.append((srv, engines[0] if engines else -1))
    assert len(engines) == 1, f"engine processes under the front: {engines}"
    return started[-1]


def kill_leftovers(started: list[tuple[RunningServer, int]]) -> None:
    for srv, engine in started:
        if srv.proc.poll() is None:
            srv.kill()
        if engine > 0 and alive(engine) and "ocs.charging.engine" in cmdline(engine):
            os.kill(engine, signal.SIGKILL)


async def load_and_kill(srv: RunningServer, engine: int, target: str, rng: random.Random,
                        load: Load) -> None:
    """Load the server, kill the target at a random instant, end the load."""
    clients = [await DiameterClient.connect(srv.host, srv.port) for _ in range(CONNECTIONS)]
    tasks = [asyncio.create_task(load.gateway(c, f"{i}.{j}"))
             for i, c in enumerate(clients) for j in range(GATEWAYS_PER_CONNECTION)]
    try:
        await asyncio.sleep(rng.uniform(0.3, 3.0))
        if target == "engine":
            os.kill(engine, signal.SIGKILL)
        elif target == "front":
            srv.proc.kill()
        else:
            srv.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            srv.proc.kill()
        load.stopped = True
        await asyncio.wait(tasks, timeout=15)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.close()


async def retransmit(srv: RunningServer, sessions: list[Session], rng: random.Random,
                     replays: int = 30) -> list[str]:
    """Resend, T flag set and ids kept, every request without a final answer; then the last
    request of `replays` sessions that were answered 2001. Returns the replays whose result changed."""
    answered = [s.requests[-1] for s in sessions if s.requests and s.requests[-1].result == 2001]
    sample = rng.sample(answered, min(replays, len(answered)))
    changed = []
    client = await DiameterClient.connect(srv.host, srv.port)
    try:
        for req in (r for s in sessions for r in s.requests):
            if req.result is None or req.result in TRANSIENT:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    cca = await client.ccr(req.ccr, retransmit=True, ids=req.ids, timeout=8)
                    req.result = cca.result_code
        for req in sample:
            cca = await client.ccr(req.ccr, retransmit=True, ids=req.ids, timeout=8)
            if cca.result_code != req.result:
                changed.append(f"{req.ccr.session_id}#{req.ccr.request_number}: "
                               f"{req.result} -> {cca.result_code}")
    finally:
        await client.close()
    return changed


@dataclass
class Books:
    debited: dict[str, int]   # per session: minus the balance delta of its debit entries
    reserved: dict[str, int]  # accounts with money reserved
    reservations: int
    open_sessions: int
    cdr_seq: int              # the last CDR id drawn


def books(data: Path) -> Books:
    store = open_store(data)
    try:
        with store.read() as view:
            debited: dict[str, int] = defaultdict(int)
            for e in view.journal():
                if e.kind in DEBIT_KINDS and e.session_id is not None:
                    debited[e.session_id] -= e.delta
            reserved = {a.id: a.reserved for a in view.accounts() if a.reserved}
            reservations = sum(1 for _ in view.txn.cursor(db=view.dbs["reservations"]))
            open_count = open_sessions(view.txn, view.dbs)
            raw_seq = view.txn.get(cdrs.SEQ_KEY, db=view.dbs["meta"])
    finally:
        store.close()
    return Books(dict(debited), reserved, reservations, open_count,
                 int.from_bytes(raw_seq or b"", "big"))


async def wait_settled(data: Path, timeout: float = 30.0) -> None:
    """Until the sweeper closed every open session and released every reservation (or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = books(data)
        if not b.reserved and not b.open_sessions:
            return
        await asyncio.sleep(0.25)


@pytest.mark.slow
@pytest.mark.parametrize(("target", "seed"), [("engine", 1), ("front", 2),
                                              ("front-during-shutdown", 3)])
async def test_kill9_under_load(tmp_path: Path, target: str, seed: int) -> None:
    """Kill `target` under load, restart, retransmit, sweep, stop; the books must balance."""
    rng = random.Random(seed)
    data, config = tmp_path / "d", tmp_path / "ocs.toml"
    config.write_text(CONFIG)
    provision(data, {a: {"balance": "100000"} for a in ACCOUNTS})
    started: list[tuple[RunningServer, int]] = []
    try:
        srv, engine = serve(data, config, started)
        load = Load(rng)
        await load_and_kill(srv, engine, target, rng, load)
        rc = srv.proc.wait(30)
        assert rc == (1 if target == "engine" else -signal.SIGKILL), srv.log()[-3000:]
        deadline = time.monotonic() + 20
        while alive(engine) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not alive(engine), "the engine outlived its front"

        srv, _ = serve(data, config, started)
        changed = await retransmit(srv, load.sessions, rng)
        await wait_settled(data)
        rc = srv.stop()
        assert rc == 0, srv.log()[-3000:]
    finally:
        kill_leftovers(started)

    assert not changed, f"a replayed answer differs from the one first sent: {changed}"
    unanswered = [f"{r.ccr.session_id}#{r.ccr.request_number}: {r.result}"
                  for s in load.sessions for r in s.requests
                  if r.result is None or r.result in TRANSIENT]
    assert not unanswered, f"no final answer even after retransmission: {unanswered[:10]}"

    rec = subprocess.run([sys.executable, "-m", "ocs", "reconcile", "--data", str(data),
                          "--cdrs", str(data / "cdr")], capture_output=True, text=True, timeout=120)
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr[-3000:]

    b = books(data)
    expected = {s.sid: s.acknowledged_cost() for s in load.sessions}
    assert sum(expected.values()) > 0, "the load had nothing acknowledged before the kill"
    wrong = {sid: (expected.get(sid, 0), b.debited.get(sid, 0))
             for sid in expected.keys() | b.debited.keys()
             if expected.get(sid, 0) != b.debited.get(sid, 0)}
    assert not wrong, f"(acknowledged, debited) per session: {dict(list(wrong.items())[:10])}"

    rows = list(read_all(data / "cdr"))
    assert sum(c.amount for _, c in rows) == sum(b.debited.values())
    ids = sorted(c.cdr_id for _, c in rows)
    assert ids == list(range(1, b.cdr_seq + 1)), (
        f"{len(ids)} CDR rows, {len(set(ids))} ids, last id drawn {b.cdr_seq}")

    assert b.reserved == {} and b.reservations == 0, (b.reserved, b.reservations)
