"""The engine against workloads recorded from it (tests/charging/workloads.py): same CCAs byte for
byte, same command results, same balances, ledger and CDRs.

Recorded from today's engine before the charging engine v2 replaces it; the new engine must pass
this unchanged. A deliberate behaviour change re-records (`python tests/charging/workloads.py`)
and says so in its commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import workloads

from balance import ops
from balance.store import Tx
from ocs.charging import commands
from ocs.charging.inprocess import InProcessEngine
from protocol.cca import decode_cca


@pytest.mark.parametrize("name", sorted(workloads.WORKLOADS))
def test_replay_gives_the_recorded_answers_and_state(name: str, tmp_path: Path) -> None:
    rec = workloads.load(name)
    assert rec["name"] == name
    requests = 0
    with InProcessEngine(tmp_path / "d", workloads._tariff()) as engine:
        def create(tx: Tx) -> None:
            tx.now = workloads.T0
            for a in rec["accounts"]:
                ops.create_account(tx, f"create:{a['account_id']}", **a)
        engine.store.execute(create)
        for k, step in enumerate(rec["steps"]):
            if step["kind"] == "batch":
                got = engine.batch(step["frames"], now=step["now"])
                for i, (a, b) in enumerate(zip(got, step["answers"], strict=True)):
                    assert a == b, (f"{name} step {k} request {i}: answer differs\n"
                                    f"got      {decode_cca(a)}\nrecorded {decode_cca(b)}")
                requests += len(got)
            elif step["kind"] == "sweep":
                assert engine.sweep(now=step["now"]) == step["result"], f"{name} step {k}: sweep"
            else:
                def command(tx: Tx, s: dict[str, Any] = step) -> Any:
                    tx.now = s["now"]
                    try:
                        return {"ok": commands.run(tx, s["name"], s["args"])}
                    except commands.Refused as exc:
                        return {"refused": str(exc)}
                got_result = engine.store.execute(command)
                assert got_result == step["result"], f"{name} step {k}: {step['name']}"
        final = workloads.state(engine)
    for part in ("accounts", "ledger", "cdrs"):
        assert final[part] == rec["final"][part], f"{name}: {part} differ"
    assert requests >= 600 and len(rec["final"]["cdrs"]) >= 50
    print(f"{name}: {requests} requests, {len(final['cdrs'])} CDRs, {len(final['ledger'])} ledger "
          "entries: as recorded")
