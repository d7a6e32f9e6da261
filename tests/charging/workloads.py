"""Recorded workloads: what today's engine answered, kept so that any later engine must answer the same.

A workload is a seeded, deterministic list of steps over a small world (accounts, the test
tariff): batches of CCR frames (CCR-I/U/T with one or two MSCCs, EVENTs, retransmissions of earlier
frames, several requests of one session in one batch), provisioning commands (top-ups, bundles,
suspend and activate, through ocs.charging.commands), clock jumps and sweeper passes. Recording
runs it through the in-process engine with every clock pinned and stores, per step, the CCA bytes
or the command's result, and at the end the balances, the ledger and the CDRs. The charging
engine v2 issue asks for exactly this: the new engine must give the same CCAs, balances and CDRs
as the current one on workloads recorded from the current one before it is replaced.

    python tests/charging/workloads.py      # re-record (only when a behaviour change is intended)

The files are tests/charging/data/workloads/NAME.msgpack.gz; test_recorded_workloads.py replays them.
"""

from __future__ import annotations

import gzip
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "workloads"
T0 = 1_764_000_000

# name -> (seed, steps, the mix: probabilities of a CCR-U/T for an open session vs a new one, ...)
WORKLOADS: dict[str, dict[str, Any]] = {
    "data-updates": {"seed": 1, "steps": 160, "rgs": [200], "event": 0.02, "update": 0.75,
                     "retransmit": 0.03, "command": 0.05, "two_mscc": 0.0},
    "standard-mix": {"seed": 2, "steps": 160, "rgs": [100, 200], "event": 0.15, "update": 0.55,
                     "retransmit": 0.05, "command": 0.08, "two_mscc": 0.1},
    "low-balance": {"seed": 3, "steps": 160, "rgs": [100, 200], "event": 0.1, "update": 0.6,
                    "retransmit": 0.08, "command": 0.12, "two_mscc": 0.15, "poor": True},
}
ACCOUNTS = 8
UNIT = {100: "time", 200: "total_octets", 300: "service_specific_units"}


def _tariff() -> str:
    sys.path.insert(0, str(HERE.parent))
    from server_harness import TARIFF
    return TARIFF


@dataclass(slots=True)
class Gen:
    rng: random.Random
    mix: dict[str, Any]
    now: int = T0
    hbh: int = 0
    sessions: int = 0
    open: dict[str, list[Any]] = field(default_factory=dict)  # sid -> [account, rgs, number]
    sent: list[bytes] = field(default_factory=list)

    def frame(self, sid: str, rtype: int, number: int, account: int, mscc: list[Any],
              **kw: Any) -> bytes:
        from protocol import constants as C
        from protocol.ccr import encode_ccr
        from protocol.records import CCR
        self.hbh += 1
        c = CCR(session_id=sid, origin_host="gw.rec", origin_realm="rec", destination_realm="ocs",
                auth_application_id=4, service_context_id="32251@3gpp.org", request_type=rtype,
                request_number=number,
                subscription_ids=[(C.SubscriptionIdType.END_USER_E164, f"49177{account:04d}")],
                mscc=mscc, **kw)
        f = encode_ccr(c, self.hbh, self.hbh)
        self.sent.append(f)
        return f


def _units(rg: int, n: int) -> Any:
    from protocol.records import Units
    u = Units()
    setattr(u, UNIT[rg], n)
    return u


def _want(rng: random.Random, rg: int) -> int:
    return rng.choice([60, 120, 600]) if rg == 100 else rng.choice([1 << 20, 3 << 20, 10 << 20])


def _requests(g: Gen, frames: list[bytes]) -> None:
    from protocol import constants as C
    from protocol.records import MSCCRequest
    rng, mix = g.rng, g.mix
    roll = rng.random()
    if roll < mix["retransmit"] and g.sent:
        frames.append(rng.choice(g.sent[-40:]))
    elif roll < mix["retransmit"] + mix["event"]:
        g.sessions += 1
        frames.append(g.frame(f"gw.rec;e{g.sessions}", 4, 0, rng.randrange(ACCOUNTS),
                              [MSCCRequest(300, [], _units(300, rng.randint(1, 3)), [])],
                              requested_action=C.RequestedAction.DIRECT_DEBITING))
    elif roll < mix["retransmit"] + mix["event"] + mix["update"] and g.open:
        sid = rng.choice(sorted(g.open))
        account, rgs, number = g.open[sid]
        for _ in range(1 + (rng.random() < 0.15)):  # sometimes two of one session in one batch
            number += 1
            final = rng.random() < 0.2
            mscc = [MSCCRequest(rg, [], None if final else _units(rg, _want(rng, rg)),
                                [_units(rg, rng.randint(0, _want(rng, rg)))]) for rg in rgs]
            frames.append(g.frame(sid, 3 if final else 2, number, account, mscc))
            if final:
                del g.open[sid]
                break
            g.open[sid][2] = number
    else:
        g.sessions += 1
        sid = f"gw.rec;{g.sessions}"
        rgs = sorted(rng.sample(mix["rgs"], 2)) if len(mix["rgs"]) > 1 and \
            rng.random() < mix["two_mscc"] else [rng.choice(mix["rgs"])]
        account = rng.randrange(ACCOUNTS)
        g.open[sid] = [account, rgs, 0]
        frames.append(g.frame(sid, 1, 0, account,
                              [MSCCRequest(rg, [], _units(rg, _want(rng, rg)), []) for rg in rgs]))


def _command(g: Gen, k: int) -> tuple[str, dict[str, Any]]:
    rng = g.rng
    ident = f"49177{rng.randrange(ACCOUNTS):04d}"
    roll = rng.random()
    if roll < 0.5:
        return "account.topup", {"key": f"rec:{k}", "ident": ident,
                                 "amount": rng.choice([10_000, 500_000, 2_000_000])}
    if roll < 0.65:
        return "account.adjust", {"key": f"rec:{k}", "ident": ident, "amount": -rng.choice([1, 50_000]),
                                  "reason": "recorded"}
    if roll < 0.8:
        return "account.bundle", {"key": f"rec:{k}", "ident": ident, "unit": "octets",
                                  "amount": rng.choice([1 << 20, 5 << 20]), "rating_groups": [200]}
    return "account.status", {"key": f"rec:{k}", "ident": ident,
                              "status": rng.choice(["suspended", "active", "active"])}


def accounts_of(name: str) -> list[dict[str, Any]]:
    rng = random.Random(WORKLOADS[name]["seed"] * 7919)
    poor = WORKLOADS[name].get("poor", False)
    return [{"account_id": f"49177{i:04d}", "currency": "EUR",
             "balance": rng.choice([0, 20_000, 150_000]) if poor else rng.choice([5_000_000, 50_000_000]),
             "plan": "redirecting" if i == ACCOUNTS - 1 else "default",
             "credit_limit": 100_000 if i == 1 else 0} for i in range(ACCOUNTS)]


def steps(name: str) -> Iterator[dict[str, Any]]:
    """The steps of workload `name`, one at a time: the caller adds a batch's "answers" before it
    asks for the next, and the client side learns from them (a session whose answer was not 2001
    ends on the client's side, as a gateway would end it)."""
    mix = WORKLOADS[name]
    rng = random.Random(mix["seed"])
    g = Gen(rng, mix)
    for k in range(mix["steps"]):
        g.now += rng.choice([0, 1, 1, 2, 5, 30])
        roll = rng.random()
        if roll < mix["command"]:
            name_, args = _command(g, k)
            yield {"kind": "command", "now": g.now, "name": name_, "args": args}
        elif roll < mix["command"] + 0.02:
            g.now += rng.choice([900, 2000])  # a clock jump past Validity-Time and the session timeout
            yield {"kind": "sweep", "now": g.now}
        else:
            frames: list[bytes] = []
            for _ in range(rng.randint(1, 8)):
                _requests(g, frames)
            step = {"kind": "batch", "now": g.now, "frames": frames}
            yield step
            _learn(g, step["answers"])


def _learn(g: Gen, answers: list[bytes]) -> None:
    from protocol.cca import decode_cca
    for a in answers:
        cca = decode_cca(a)
        if cca.session_id in g.open and (cca.result_code != 2001 or any(
                m.result_code != 2001 for m in cca.mscc)):
            del g.open[cca.session_id]


def state(engine: Any) -> dict[str, Any]:
    """What must come out the same: balances, the ledger, the CDRs (as their file rows)."""
    from ocs.billing import cdr as cdrs
    with engine.store.read() as view:
        accounts = [[a.id, a.balance, a.reserved, a.status, a.seq] for a in view.accounts()]
        ledger = [[e.account_id, e.seq, e.kind, e.delta, e.balance, e.reserved_delta, e.reserved,
                   e.bundles, e.session_id, e.rating_group, e.reason]
                  for a in view.accounts() for e in view.ledger(a.id)]
        rows = [cdrs.to_row(c) for c in cdrs.iter_from(view.read_txn, view.dbs["cdrs"])]
    return {"accounts": accounts, "ledger": ledger,
            "cdrs": [{k: (v if isinstance(v, (int, str, type(None))) else str(v)) for k, v in r.items()}
                     for r in rows]}


def run(name: str, path: Path) -> dict[str, Any]:
    """Run workload `name` in an engine over a fresh store at `path`: its steps with outcomes."""
    from balance import ops
    from balance.store import Tx
    from ocs.charging import commands
    from ocs.charging.inprocess import InProcessEngine
    accounts, todo = accounts_of(name), []
    with InProcessEngine(path, _tariff()) as engine:
        def create(tx: Tx) -> None:
            tx.now = T0
            for a in accounts:
                ops.create_account(tx, f"create:{a['account_id']}", **a)
        engine.store.execute(create)
        for s in steps(name):
            todo.append(s)
            if s["kind"] == "batch":
                s["answers"] = engine.batch(s["frames"], now=s["now"])
            elif s["kind"] == "sweep":
                s["result"] = engine.sweep(now=s["now"])
            else:
                def command(tx: Tx, s: dict[str, Any] = s) -> Any:
                    tx.now = s["now"]
                    try:
                        return {"ok": commands.run(tx, s["name"], s["args"])}
                    except commands.Refused as exc:
                        return {"refused": str(exc)}
                s["result"] = engine.store.execute(command)
        return {"name": name, "accounts": accounts, "steps": todo, "final": state(engine)}


def load(name: str) -> dict[str, Any]:
    with gzip.open(DATA / f"{name}.msgpack.gz", "rb") as fh:
        out: dict[str, Any] = msgpack.unpackb(fh.read(), raw=False, strict_map_key=False)
    return out


def record() -> None:
    import tempfile
    DATA.mkdir(parents=True, exist_ok=True)
    for name in WORKLOADS:
        with tempfile.TemporaryDirectory() as tmp:
            rec = run(name, Path(tmp) / "d")
        blob = msgpack.packb(rec, use_bin_type=True)
        with gzip.GzipFile(DATA / f"{name}.msgpack.gz", "wb", mtime=0) as fh:
            fh.write(blob)
        n = sum(len(s.get("frames", ())) for s in rec["steps"])
        print(f"{name}: {len(rec['steps'])} steps, {n} requests, {len(rec['final']['cdrs'])} CDRs, "
              f"{len(rec['final']['ledger'])} ledger entries")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))
    record()
