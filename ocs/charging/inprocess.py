"""The charging engine's batch path in this process and thread: no sockets, no subprocess.

What seeded simulation tests drive: CCRs (records or raw frames) go through the same op and the
same answer shaping as in the engine (ocs.charging.requests), in one write transaction per batch
run by the group-commit writer's batch logic (a failing op isolated as there), then the
commit is synced. `now` pins the transaction's clock, so a run is a function of its inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import TracebackType

from balance.store import Store, Tx, open_store
from balance.writer import GroupCommitWriter
from ocs.charging import credit, requests, sweeper
from ocs.charging.settings import ChargingSettings
from ocs.charging.tariffs import Raters
from ocs.config import ServeConfig
from protocol.ccr import encode_ccr
from protocol.records import CCR
from rating.tariff_store import TariffStore


class InProcessEngine:
    """credit.process over the store at `path`, batch by batch, as the engine runs it.

    `tariff` (TOML text), when given, is loaded as a version in force from the epoch; `settings`
    default to `ocs serve`'s. The store stays open until close() (use it as a context manager);
    `store` is there to provision accounts and read results."""

    def __init__(self, path: str | os.PathLike[str], tariff: str | None = None, *,
                 settings: ChargingSettings | None = None, sync: bool = False) -> None:
        self.store: Store = open_store(path, sync=sync)
        try:
            tariffs = TariffStore(self.store)
            if tariff is not None:
                tariffs.load(tariff, "inprocess.toml", effective_from=0)
            self.raters = Raters(tariffs)
            cfg = settings or ChargingSettings.of(ServeConfig(data=os.fspath(path)))
            self.ctx = credit.Context(cfg, credit.open_dbs(self.store), self.raters)
        except BaseException:
            self.store.close()
            raise
        self.writer = GroupCommitWriter(self.store)  # its batch logic only, run in this thread

    def answer(self, request: CCR | bytes, now: int | None = None) -> bytes:
        """The CCA bytes for one request, applied in a batch of its own."""
        return self.batch([request], now)[0]

    def batch(self, requests_: Iterable[CCR | bytes], now: int | None = None) -> list[bytes]:
        """Apply requests in one write txn, in order; their CCA bytes once it is committed.
        A record is encoded with its own hop-by-hop and end-to-end ids."""
        frames = [r if isinstance(r, bytes) else encode_ccr(r, r.hop_by_hop, r.end_to_end, r.retransmit)
                  for r in requests_]
        self.raters.refresh()  # as the engine does before each batch: tariff changes in force
        ops = [(_at(requests.request_op(self.ctx, f), now), f) for f in frames]
        outcomes = self.writer.commit_batch(ops)
        self.store.sync_meta()
        cfg = self.ctx.cfg
        return [requests.answer(frame, result, exc, cfg.origin_host, cfg.origin_realm)
                for frame, result, exc in outcomes]

    def sweep(self, now: int | None = None) -> int:
        """One sweeper pass in a write txn of its own; how many stale sessions it closed."""
        def run(tx: Tx) -> int:
            if now is not None:
                tx.now = now
            return sweeper.sweep(tx, self.ctx)
        return self.store.execute(run)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> InProcessEngine:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _at(op: requests.Op, now: int | None) -> requests.Op:
    if now is None:
        return op

    def pinned(tx: Tx) -> bytes:
        tx.now = now
        return op(tx)
    return pinned
