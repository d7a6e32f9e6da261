"""Seeded simulation of the charging rules in process (TigerBeetle's approach, design-anchors.md).

Each seed builds a world (accounts with opening balances, the test tariff) and takes STEPS random
steps: batches of CCR-I/U/T and EVENTs over many sessions (several requests of one session in one
batch too), retransmissions, top-ups, suspensions, clock jumps, sweeps, restarts, and crashes
(a batch applied whose answers never reached the client, or never applied at all: the client
retransmits after the restart). After every step it checks, from outside the rules:
- money is conserved: balances + CDR amounts + money of open rating groups = opening + top-ups,
  and `reconcile` (ledger, balances, reservations, CDRs) finds nothing;
- an acknowledged answer never changes: a retransmission of one of a session's last answers gets
  it byte for byte, and any retransmission changes no money;
- nothing reserved outlives its session: every reservation belongs to an open session;
- every CDR id once (and reconcile: the CDRs of each session and rating group add up to its debits).
A failing seed is printed with the line that replays it exactly (OCS_SIM_SEED=N). CI runs
OCS_SIM_SEEDS (default 2,000) seeds; the slow mode is `OCS_SIM_SEEDS=100000 python -m pytest
--timeout 0 tests/charging/test_simulation.py`.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from server_harness import TARIFF

from balance import ops
from balance.errors import BalanceError
from balance.store import Tx
from ocs.billing import cdr as cdrs
from ocs.billing.reconcile import reconcile
from ocs.charging import sessions
from ocs.charging.inprocess import InProcessEngine
from protocol import constants as C
from protocol.cca import decode_cca
from protocol.ccr import encode_ccr, peek_session_id
from protocol.records import CCR, MSCCRequest, Units

SEEDS = int(os.environ.get("OCS_SIM_SEEDS", "2000"))
ONE_SEED = os.environ.get("OCS_SIM_SEED")
STEPS = 30
T0 = 1_760_000_000
INITIAL, UPDATE, TERMINATION, EVENT = (int(t) for t in C.CCRequestType)
ACCOUNTS = 4
RETENTION = 300  # ServeConfig.dedup_retention's default
SERVICES = {100: "time", 200: "total_octets"}  # voice (60 s at 0.01), data (1 MiB at 0.01)


@dataclass(slots=True)
class Sim:
    """What the client side knows; the rules' state is only read through the store."""

    rng: random.Random
    engine: InProcessEngine
    path: Path
    now: int = T0
    topups: int = 0
    opening: int = 0
    next_session: int = 0
    hbh: int = 0
    open: dict[str, list[int]] = field(default_factory=dict)  # session -> [account, rg, number, granted]
    # session -> its last answers (request, answer, when): retransmissions are recognised for
    # dedup_retention after a session ends (RFC 6733 duplicate detection is a window, not forever)
    answers: dict[str, list[tuple[bytes, bytes, int]]] = field(default_factory=dict)
    unacked: list[bytes] = field(default_factory=list)  # frames sent whose answers were lost

    def ccr(self, sid: str, rtype: int, number: int, account: int, mscc: list[MSCCRequest],
            **kw: object) -> bytes:
        self.hbh += 1
        c = CCR(session_id=sid, origin_host="gw.sim", origin_realm="sim", destination_realm="ocs",
                auth_application_id=4, service_context_id="32251@3gpp.org", request_type=rtype,
                request_number=number, subscription_ids=[(C.SubscriptionIdType.END_USER_E164,
                                                          f"49170{account:04d}")],
                mscc=mscc, **kw)  # type: ignore[arg-type]
        return encode_ccr(c, self.hbh, self.hbh)


def _units(rg: int, n: int) -> Units:
    u = Units()
    setattr(u, SERVICES[rg], n)
    return u


def _money(engine: InProcessEngine) -> tuple[int, int, int]:
    """(balances, CDR amounts, money of rating groups without their CDR yet) over all accounts."""
    with engine.store.read() as view:
        balances = sum(a.balance for a in view.accounts())
        in_cdrs = sum(c.amount for c in cdrs.iter_from(view.read_txn, view.dbs["cdrs"]))
        in_open = 0
        for key, raw in view.read_txn.cursor(db=view.dbs["sessions"]):
            sess = sessions.Session.unpack(bytes(key).decode(), raw)
            in_open += sum(g.amount for g in sess.groups.values() if not g.closed)
    return balances, in_cdrs, in_open


def _check(sim: Sim, where: str) -> None:
    engine = sim.engine
    balances, in_cdrs, in_open = _money(engine)
    assert balances + in_cdrs + in_open == sim.opening + sim.topups, (
        f"{where}: money not conserved: balances {balances} + CDRs {in_cdrs} + open {in_open} != "
        f"opening {sim.opening} + top-ups {sim.topups}")
    report = reconcile(engine.store, now=sim.now)
    assert report.ok, f"{where}: reconcile: {[str(d) for d in report.discrepancies[:3]]}"
    with engine.store.read() as view:
        txn, dbs = view.read_txn, view.dbs
        for key, _raw in txn.cursor(db=dbs["reservations"]):
            sid = bytes(key[:-5]).decode()
            sess = sessions.load(txn, dbs, sid)
            assert sess is not None and sess.state == sessions.OPEN, (
                f"{where}: a reservation outlives its session {sid!r}")
        ids = [c.cdr_id for c in cdrs.iter_from(txn, dbs["cdrs"])]
        assert len(ids) == len(set(ids)), f"{where}: a CDR id twice"


def _send(sim: Sim, frames: list[bytes], where: str, *, lose: bool = False) -> list[bytes]:
    """One batch; remember the answers (or lose them: the client will retransmit)."""
    answers = sim.engine.batch(frames, now=sim.now)
    if lose:
        sim.unacked.extend(frames)
        return []
    for f, a in zip(frames, answers, strict=True):
        sid = decode_cca(a).session_id
        kept = sim.answers.setdefault(sid, [])
        kept.append((f, a, sim.now))
        del kept[:-sessions.ANSWERS_MIN]
    return answers


def _session_step(sim: Sim, frames: list[bytes], after: list[tuple[str, int]]) -> None:
    """Add requests for random sessions to `frames`; `after` gets (session, kind) to learn from."""
    rng = sim.rng
    roll = rng.random()
    if roll < 0.3 or not sim.open:
        sim.next_session += 1
        sid = f"gw.sim;{sim.next_session}"
        account, rg = rng.randrange(ACCOUNTS), rng.choice(list(SERVICES))
        want = rng.choice([60, 120, 600]) if rg == 100 else rng.choice([1 << 20, 5 << 20])
        sim.open[sid] = [account, rg, 0, 0]
        frames.append(sim.ccr(sid, INITIAL, 0, account, [MSCCRequest(rg, [], _units(rg, want), [])]))
        after.append((sid, INITIAL))
    elif roll < 0.45:
        account = rng.randrange(ACCOUNTS)
        sim.next_session += 1
        sid = f"gw.sim;e{sim.next_session}"
        frames.append(sim.ccr(sid, EVENT, 0, account, [MSCCRequest(300, [], Units(
            service_specific_units=rng.randint(1, 3)), [])],
            requested_action=C.RequestedAction.DIRECT_DEBITING))
        after.append((sid, EVENT))
    else:
        sid = rng.choice(sorted(sim.open))
        account, rg, number, granted = sim.open[sid]
        used = rng.randint(0, granted + granted // 4 + 1)  # sometimes more than granted
        n_req = 1 + (rng.random() < 0.2)  # sometimes two of one session in one batch
        for _ in range(n_req):
            number += 1
            final = rng.random() < 0.25
            if final:
                frames.append(sim.ccr(sid, TERMINATION, number, account,
                                      [MSCCRequest(rg, [], None, [_units(rg, used)])]))
                after.append((sid, TERMINATION))
                break
            frames.append(sim.ccr(sid, UPDATE, number, account,
                                  [MSCCRequest(rg, [], _units(rg, granted or 60), [_units(rg, used)])]))
            after.append((sid, UPDATE))
            used = rng.randint(0, granted)
        sim.open[sid][2] = number


def _learn(sim: Sim, answers: list[bytes], after: list[tuple[str, int]]) -> None:
    for a, (sid, kind) in zip(answers, after, strict=True):
        if kind == EVENT:
            continue
        cca = decode_cca(a)
        # the client goes on with a session after 2001, or after 4012 on an update (it may top up);
        # anything else ends it on the client's side (the rules or the sweeper close it)
        goes_on = cca.result_code == C.DIAMETER_SUCCESS or (
            kind == UPDATE and cca.result_code == C.DIAMETER_CREDIT_LIMIT_REACHED)
        if kind == TERMINATION or not goes_on:
            sim.open.pop(sid, None)
            continue
        if sid in sim.open:
            g = cca.mscc[0].granted if cca.mscc else None
            rg = sim.open[sid][1]
            sim.open[sid][3] = (getattr(g, SERVICES[rg]) or 0) if g is not None else 0


def step(sim: Sim, k: int) -> None:
    rng, where = sim.rng, f"step {k}"
    roll = rng.random()
    if roll < 0.55:
        frames: list[bytes] = []
        after: list[tuple[str, int]] = []
        for _ in range(rng.randint(1, 6)):
            _session_step(sim, frames, after)
        if rng.random() < 0.07:  # a crash: the batch applied (or not), its answers lost
            if rng.random() < 0.5:
                _send(sim, frames, where, lose=True)
            else:
                sim.unacked.extend(frames)
            _restart(sim)
            return
        _learn(sim, _send(sim, frames, where), after)
    elif roll < 0.68 and sim.answers:
        before = _money(sim.engine)
        sid = rng.choice(sorted(sim.answers))
        request, first, at = rng.choice(sim.answers[sid])
        if sid not in sim.open and sim.now - at >= RETENTION:
            del sim.answers[sid]
            return
        again = bytearray(request)
        again[4] |= 0x10  # the T flag of a retransmission
        got = sim.engine.batch([bytes(again)], now=sim.now)[0]
        assert got == first, (f"{where}: a retransmission of {sid!r} got another answer: "
                              f"{decode_cca(first)} then {decode_cca(got)}")
        assert _money(sim.engine) == before, f"{where}: a retransmission changed money"
    elif roll < 0.75:
        account, amount = f"49170{rng.randrange(ACCOUNTS):04d}", rng.choice([1, 10, 500]) * 10_000
        sim.engine.store.execute(lambda tx: ops.topup(tx, None, _acct(tx, account), amount))
        sim.topups += amount
    elif roll < 0.8:
        account = f"49170{rng.randrange(ACCOUNTS):04d}"
        status = rng.choice(["suspended", "active", "active"])
        sim.engine.store.execute(lambda tx: ops.set_status(tx, None, _acct(tx, account), status))
    elif roll < 0.9:
        sim.now += rng.choice([1, 5, 30, 120, 900, 2000])
    elif roll < 0.96:
        sim.engine.sweep(now=sim.now)
        _forget_closed(sim)
    else:
        _restart(sim)
    _check(sim, where)


def _acct(tx: Tx, alias: str) -> str:
    account_id = tx.resolve(alias)
    assert account_id is not None
    return account_id


def _forget_closed(sim: Sim) -> None:
    """Sessions the sweeper closed are no longer the client's to continue."""
    with sim.engine.store.read() as view:
        for sid in list(sim.open):
            sess = sessions.load(view.read_txn, view.dbs, sid)
            if sess is None or sess.state != sessions.OPEN:
                del sim.open[sid]


def _restart(sim: Sim) -> None:
    """Close and reopen the engine on the same store; the client retransmits what it lost."""
    sim.engine.close()
    sim.engine = InProcessEngine(sim.path)
    if sim.unacked:
        lost, sim.unacked = sim.unacked, []
        frames = []
        for f in lost:
            again = bytearray(f)
            again[4] |= 0x10
            frames.append(bytes(again))
        first = _send(sim, frames, "restart")  # now acknowledged: kept like any other answer
        before = _money(sim.engine)
        # The second time round nothing moves: each was applied exactly once by now. Each session
        # keeps its last ANSWERS_MIN answers for replay (sessions.py), so only those must come back
        # byte for byte (a batch may hold a CCR-I and two CCR-Us of one session: the I's is gone).
        again = sim.engine.batch(frames, now=sim.now)
        assert _money(sim.engine) == before, "a retransmission after a restart changed money"
        per_session: dict[bytes, list[int]] = {}
        for i, f in enumerate(frames):
            per_session.setdefault(peek_session_id(f) or b"", []).append(i)
        for idx in per_session.values():
            for i in idx[-sessions.ANSWERS_MIN:]:
                assert again[i] == first[i], "a retransmission after a restart changed"
        _forget_closed(sim)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provisioned store, copied for every seed (creating one per seed would dominate the run)."""
    path = tmp_path_factory.mktemp("sim") / "template"
    with InProcessEngine(path, TARIFF) as eng:
        def provision(tx: Tx) -> None:
            for i in range(ACCOUNTS):
                ops.create_account(tx, None, account_id=f"acct{i}", currency="EUR",
                                   balance=(0, 50_000, 1_000_000, 20_000_000)[i],
                                   aliases=[f"49170{i:04d}"])
        eng.store.execute(provision)
    return path


def run_seed(seed: int, template: Path, workdir: Path) -> int:
    """One seed; returns the number of requests answered. Raises AssertionError naming the step."""
    path = workdir / f"s{seed}"
    shutil.copytree(template, path)
    rng = random.Random(seed)
    sim = Sim(rng, InProcessEngine(path), path)
    sim.opening = sum(_money(sim.engine)[:1])
    try:
        for k in range(STEPS):
            step(sim, k)
        return sim.hbh
    finally:
        sim.engine.close()
        shutil.rmtree(path, ignore_errors=True)


def seeds() -> Iterator[int]:
    if ONE_SEED is not None:
        yield int(ONE_SEED)
    else:
        yield from range(SEEDS)


def test_seeded_simulation(template: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = requests = 0
    for seed in seeds():
        try:
            requests += run_seed(seed, template, tmp_path)
        except (AssertionError, BalanceError) as exc:
            raise AssertionError(f"seed {seed}: {exc}\n  replay: OCS_SIM_SEED={seed} python -m pytest "
                                 f"-q tests/charging/test_simulation.py") from exc
        done += 1
    print(f"\nsimulation: {done} seeds x {STEPS} steps, {requests} requests, "
          f"{time.monotonic() - t0:.1f} s")
    assert done == (1 if ONE_SEED is not None else SEEDS)
