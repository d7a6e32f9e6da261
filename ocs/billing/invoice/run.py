"""An invoicing run for one period: usage from CDR files, fees/tax/discounts from the plan in force at
the end of the period, adjustments from the ledger, numbers from LMDB, documents to a directory.

Re-running a period rewrites the same documents with the same numbers (idempotent): every figure is
derived from the inputs, dates are period dates, and numbers are stored.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ocs.billing.invoice import numbering, render
from ocs.billing.invoice.lines import AccountPeriod, Adjustment, build_invoice, recurring_fraction
from ocs.billing.invoice.period import Period
from ocs.billing.invoice.usage import collect
from ocs.lifeline import die_with_parent

if TYPE_CHECKING:
    from balance.store import Store
    from balance.views import View
    from rating.rater import Rater

DOC_FORMATS = ("json", "html", "pdf")
RENDER_CHUNK = 32               # documents per task sent to a render process
INVOICE_KINDS = ("adjust",)     # ledger kinds that are invoice lines (top-ups are payments: not lines)


@dataclass(slots=True)
class RunResult:
    docs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cdrs: int = 0
    files: int = 0


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _ledger_facts(view: View, period: Period) -> tuple[dict[str, list[Adjustment]], dict[str, int]]:
    """Per account: adjustments in the period, and the closing instant. One pass over the journal
    in commit order (each account's entries come in its own order), not a chain walk per account."""
    adjustments: dict[str, list[Adjustment]] = {}
    closed: dict[str, int] = {}
    for e in view.journal():
        if e.kind == "status" and e.reason == "closed":
            closed[e.account_id] = e.ts
        elif e.kind in INVOICE_KINDS and period.start <= e.ts < period.end:
            adjustments.setdefault(e.account_id, []).append(Adjustment(e.ts, e.reason, e.delta))
    return adjustments, closed


def _tariff_at(store: Store, instant: int) -> Rater | None:
    try:
        from rating.tariff_store import TariffStore
    except ImportError:
        return None
    return TariffStore(store).at(instant)


def gather(store: Store, cdrs: str | os.PathLike[str],
           period: Period) -> tuple[list[AccountPeriod], Rater | None, RunResult]:
    """Every account with usage, adjustments or a recurring fee in the period."""
    res = RunResult()
    usage = collect(cdrs, period)
    res.cdrs, res.files = usage.cdrs, usage.files
    rater = _tariff_at(store, period.end - 1)
    plans = rater.tariff.plans if rater is not None else {}
    if rater is None:
        res.warnings.append(f"no tariff in force at the end of {period.label}: no fees, tax or discounts")
    out: list[AccountPeriod] = []
    seen: set[str] = set()
    with store.read() as view:
        all_adjustments, closings = _ledger_facts(view, period)
        for acct in view.accounts():
            seen.add(acct.id)
            adjustments, closed_at = all_adjustments.get(acct.id, []), closings.get(acct.id)
            if acct.status == "closed" and closed_at is None:
                closed_at = acct.updated
            groups = usage.groups.get(acct.id, {})
            ap = AccountPeriod(acct.id, acct.currency, acct.plan, acct.created, closed_at,
                               list(groups.values()), adjustments)
            plan = plans.get(acct.plan)
            if plan is None and rater is not None and acct.plan:
                res.warnings.append(f"account {acct.id}: plan {acct.plan!r} is not in tariff "
                                    f"version {rater.version}: no fee, tax or discount")
            fee_due = plan is not None and plan.recurring_fee > 0 and recurring_fraction(ap, period) > 0
            if groups or adjustments or fee_due:
                out.append(ap)
    for acct_id in sorted(set(usage.groups) - seen):
        res.warnings.append(f"account {acct_id} has CDRs in {period.label} but is not in the store")
        out.append(AccountPeriod(acct_id, usage.currency[acct_id], usage.plan[acct_id], 0, None,
                                 list(usage.groups[acct_id].values())))
    out.sort(key=lambda a: a.account_id)
    return out, rater, res


def run(store: Store, cdrs: str | os.PathLike[str], period: Period, out_dir: str | os.PathLike[str], *,
        formats: Iterable[str] = DOC_FORMATS, progress: bool | None = None,
        jobs: int | None = None) -> RunResult:
    """Invoice the period. Documents are rendered by `jobs` processes (default: one per CPU):
    a PDF costs ~13 ms of pure Python, so 100,000 accounts are ~20 minutes on one core."""
    formats = tuple(formats)
    accounts, rater, res = gather(store, cdrs, period)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    numbers = numbering.assign(store, period.label, (a.account_id for a in accounts))
    plans = rater.tariff.plans if rater is not None else {}
    version = rater.version if rater is not None else None
    res.docs = [build_invoice(ap, period, plans.get(ap.plan_name), numbers[ap.account_id], version).to_dict()
                for ap in accounts]
    bar = tqdm(total=len(res.docs), desc=f"invoices {period.label}", unit="inv",
               disable=(None if progress is None else not progress))
    with bar:
        render_all(res.docs, out, formats, jobs, on_done=bar.update)
    res.docs.sort(key=lambda d: d["number"])
    _write(out / "invoices.csv", render.summary_csv(res.docs).encode())
    return res


def render_all(docs: list[dict[str, Any]], out: Path, formats: tuple[str, ...],
               jobs: int | None = None, on_done: Callable[[], Any] | None = None) -> None:
    """Write each document's files, in `jobs` processes (default: one per CPU)."""
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    work = partial(_render, out=out, formats=formats)
    tick = on_done or (lambda: None)
    if jobs == 1 or len(docs) < 2 * RENDER_CHUNK:
        for doc in docs:
            work(doc)
            tick()
        return
    # fork: the workers need no re-import; they only render and write, never use the store
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"),
                             initializer=die_with_parent, initargs=(os.getpid(), signal.SIGKILL)) as pool:
        for _ in pool.map(work, docs, chunksize=RENDER_CHUNK):
            tick()


def _render(doc: dict[str, Any], out: Path, formats: tuple[str, ...]) -> None:
    from ocs.billing.invoice.pdf import to_pdf  # fpdf2 is imported only when invoicing
    base = out / doc["number"]
    if "json" in formats:
        _write(base.with_suffix(".json"), render.to_json(doc).encode())
    if "html" in formats:
        _write(base.with_suffix(".html"), render.to_html(doc).encode())
    if "pdf" in formats:
        _write(base.with_suffix(".pdf"), to_pdf(doc))
