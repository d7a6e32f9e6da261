"""Revenue assurance: the ledger, the balances, the open reservations and the CDRs must agree.

Checks (each discrepancy names its subject):
- debits:       per (session, rating group), the money debited in the ledger (commit, debit, refund
                entries: minus their balance delta) equals the sum of its CDR amounts. A (session,
                rating group) with debits and no CDR is only fine while its session is open and that
                rating group is not closed (interim debits precede the final CDR).
- balances:     each account's balance equals the sum of its ledger deltas, its reserved amount the
                sum of its reserved deltas and of its reservations' money held.
- reservations: none orphaned: its account exists and is not closed, and it is not expired unless
                its session is still open.
- files (with a CDR directory): the directory holds the files of one or more consumers (those
                whose file log names a file found there or lies under it; if none, every consumer
                that was delivered any). Every CDR such a consumer was delivered (id <= its
                checkpoint) is in exactly one file row, the row equals the stored CDR, and no file
                holds an id the store does not have. CDRs are never pruned, so all of them compare.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from balance import schema
from balance.money import format_micro
from ocs.billing.cdr import layout as cdr_layout
from ocs.billing.cdr.files import read_all
from ocs.billing.cdr.record import iso
from ocs.billing.export.exporter import checkpoint, consumer_names, exported_files, pending_intent

if TYPE_CHECKING:
    from balance.store import Store
    from balance.views import View
    from ocs.charging.sessions import Session

DEBIT_KINDS = ("commit", "update", "debit", "refund")


@dataclass(slots=True)
class Discrepancy:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


@dataclass(slots=True)
class Report:
    counts: dict[str, int] = field(default_factory=dict)
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def add(self, check: str, subject: str, detail: str) -> None:
        self.discrepancies.append(Discrepancy(check, subject, detail))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts,
                "discrepancies": [asdict(d) for d in self.discrepancies]}


def _rg(rating_group: int | None) -> int:
    return -1 if rating_group is None else rating_group


def _session(view: View, session_id: str) -> Session | None:
    from ocs.charging.sessions import load
    try:
        return load(view.txn, view.dbs, session_id)
    except KeyError:       # no "sessions" db in this store
        return None


def check_store(view: View, report: Report, now: int) -> None:
    debited: dict[tuple[str, int], int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    accounts = {}
    entries = 0
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in view.journal():  # one pass in commit order: no per-account chain walks
        entries += 1
        s = sums[e.account_id]
        s[0] += e.delta
        s[1] += e.reserved_delta
        if e.kind in DEBIT_KINDS and e.session_id is not None:
            debited[(e.session_id, _rg(e.rating_group))] -= e.delta
    for acct in view.accounts():
        accounts[acct.id] = acct
        bal, res = sums.pop(acct.id, (0, 0))
        if bal != acct.balance:
            report.add("balances", acct.id, f"balance {format_micro(acct.balance)} but ledger sums "
                       f"to {format_micro(bal)}")
        if res != acct.reserved:
            report.add("balances", acct.id, f"reserved {format_micro(acct.reserved)} but ledger "
                       f"reserved deltas sum to {format_micro(res)}")
    for account_id in sums:
        report.add("balances", account_id, "ledger entries for an account that does not exist")
    report.counts.update(accounts=len(accounts), ledger_entries=entries)

    from balance.records import Reservation
    nres = 0
    for k, v in view.txn.cursor(db=view.dbs["reservations"]):
        nres += 1
        r = Reservation.unpack(k, v)
        subject = f"reservation {r.session_id}/{r.rating_group}"
        held[r.account_id] += r.money_held
        owner = accounts.get(r.account_id)
        if owner is None:
            report.add("reservations", subject, f"account {r.account_id} does not exist")
            continue
        if owner.status == "closed":
            report.add("reservations", subject, f"account {r.account_id} is closed")
        if r.expires_at < now:
            sess = _session(view, r.session_id)
            if sess is None or sess.state != 0:
                report.add("reservations", subject, f"expired at {iso(r.expires_at)} and its "
                           "session is not open")
    for acct in accounts.values():
        if held[acct.id] != acct.reserved:
            report.add("balances", acct.id, f"reserved {format_micro(acct.reserved)} but its "
                       f"reservations hold {format_micro(held[acct.id])}")
    report.counts["reservations"] = nres

    in_cdrs: dict[tuple[str, int], int] = defaultdict(int)
    ncdr = 0
    for cdr in cdr_layout.iter_from(view.txn, view.dbs[schema.CDRS], 0):
        ncdr += 1
        in_cdrs[(cdr.session_id, _rg(cdr.rating_group))] += cdr.amount
    report.counts["cdrs"] = ncdr
    for key in sorted(set(debited) | set(in_cdrs)):
        d, c = debited.get(key), in_cdrs.get(key)
        subject = f"session {key[0]} rating group {key[1]}"
        if c is None:
            if not d:
                continue
            sess = _session(view, key[0])
            grp = sess.groups.get(key[1]) if sess is not None else None
            if sess is not None and sess.state == 0 and (grp is None or not grp.closed):
                continue        # interim debits of an open session: its CDR comes at the end
            report.add("debits", subject, f"ledger debited {format_micro(d)} and there is no CDR")
        elif d is None:
            if c:
                report.add("debits", subject, f"CDRs say {format_micro(c)} and the ledger has no debit")
        elif d != c:
            report.add("debits", subject, f"ledger debited {format_micro(d)}, CDRs say {format_micro(c)}")


def _consumers_of(view: View, root: str | os.PathLike[str], names: set[str]) -> list[str]:
    """The consumers whose files a directory holds: a logged file of theirs has a name found there or
    lies under it. None matches (e.g. every file deleted): every consumer that was delivered any."""
    base = os.path.realpath(root)
    found, delivered = [], []
    for name in consumer_names(view):
        if checkpoint(view, name) > 0:
            delivered.append(name)
        for f in exported_files(view, name):
            p = os.path.realpath(f["path"])
            if os.path.basename(p) in names or p == base or p.startswith(base + os.sep):
                found.append(name)
                break
    return found or delivered


def check_files(store: Store, root: str | os.PathLike[str], report: Report) -> None:
    seen: Counter[int] = Counter()
    names: set[str] = set()
    rows = 0
    with store.read() as view:
        cdrs_db = view.dbs[schema.CDRS]
        for path, c in read_all(root):
            rows += 1
            names.add(path.name)
            seen[c.cdr_id] += 1
            stored = cdr_layout.get(view.txn, cdrs_db, c.cdr_id)
            if stored is None:
                report.add("files", f"CDR {c.cdr_id}", f"in {path} but not in the store")
            elif stored != c:
                report.add("files", f"CDR {c.cdr_id}", f"{path} differs from the stored CDR")
        consumers = _consumers_of(view, root, names)
        done = {n: checkpoint(view, n) for n in consumers}
        intents = [i for i in (pending_intent(view, n) for n in consumers) if i is not None]
    upto = max(done.values(), default=0)
    report.counts.update(file_rows=rows, exported=upto)
    for cid, n in sorted(seen.items()):
        if n > 1:
            report.add("files", f"CDR {cid}", f"exported {n} times")
        elif cid > upto and not any(i.first <= cid <= i.last for i in intents):
            report.add("files", f"CDR {cid}", f"in a file but after the checkpoint {upto}")
    for name, last in done.items():
        missing = [i for i in range(1, last + 1) if i not in seen]
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            report.add("files", f"{len(missing)} CDRs", f"delivered to consumer {name} (id <= {last}) "
                       f"but in no file: {shown}")


def reconcile(store: Store, cdrs: str | os.PathLike[str] | None = None, now: int | None = None) -> Report:
    report = Report()
    with store.read() as view:
        check_store(view, report, int(time.time()) if now is None else now)
    if cdrs is not None:
        check_files(store, cdrs, report)
    return report
