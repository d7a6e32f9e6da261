"""`ocs cdr export|show|stats`: the stored CDRs, on demand."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from balance.money import format_micro
from ocs.billing import cdr as cdrmod
from ocs.billing.export import FORMATS, ExportError, FormatError, export_pending
from ocs.billing.export.exporter import checkpoint, last_cdr_id, pending_intent
from ocs.cli.common import CommandError, add_data_arg


def open_existing(data: str):  # type: ignore[no-untyped-def]
    """The store at DIR, which must already hold OCS data (read commands never create it)."""
    from balance.store import open_store
    if not (Path(data) / "data.mdb").exists():
        raise CommandError(f"no OCS data at {data}")
    return open_store(data)


def register(sub) -> None:  # type: ignore[no-untyped-def]
    p = sub.add_parser("cdr", help="charging data records: export, show, stats")
    cmds = p.add_subparsers(dest="cdr_command", metavar="SUBCOMMAND", required=True)

    e = cmds.add_parser("export", help="write every CDR not yet exported to one file, exactly once")
    e.add_argument("--out", required=True, metavar="FILE", help="new file to write (must not exist)")
    e.add_argument("--format", default=None, choices=FORMATS,
                   help="csv | jsonl | parquet (default: from the FILE suffix, else csv)")
    add_data_arg(e)
    e.set_defaults(func=cmd_export)

    s = cmds.add_parser("show", help="the CDRs of one session")
    s.add_argument("--session", required=True, metavar="ID")
    s.add_argument("--json", action="store_true")
    add_data_arg(s)
    s.set_defaults(func=cmd_show)

    t = cmds.add_parser("stats", help="count, exported/pending, totals by rating group and unit")
    t.add_argument("--json", action="store_true")
    add_data_arg(t)
    t.set_defaults(func=cmd_stats)


def cmd_export(args) -> int:  # type: ignore[no-untyped-def]
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower().lstrip(".")
        fmt = suffix if suffix in FORMATS else "csv"
    store = open_existing(args.data)
    try:
        count, first, last = export_pending(store, args.out, fmt)
    except (ExportError, FormatError) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{args.out}: {exc.strerror or exc}") from None
    finally:
        store.close()
    if count:
        print(f"exported {count} CDRs (ids {first}..{last}) to {args.out}")
    else:
        print(f"no CDRs pending; wrote {args.out} with no rows")
    return 0


def cmd_show(args) -> int:  # type: ignore[no-untyped-def]
    store = open_existing(args.data)
    try:
        with store.read() as view:
            rows = [cdrmod.to_row(c) for c in cdrmod.by_session(view.txn, view.dbs, args.session)]
    finally:
        store.close()
    if not rows:
        raise CommandError(f"no CDRs for session {args.session!r}")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print("  ".join(f"{k}={'' if v is None else v}" for k, v in row.items()))
    return 0


def gather_stats(store) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    totals: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    count = 0
    first_t: int | None = None
    last_t: int | None = None
    after = 0
    while True:   # short read txns: never pin the whole table
        with store.read() as view:
            batch = []
            for c in cdrmod.iter_from(view.txn, view.dbs["cdrs"], after):
                batch.append(c)
                if len(batch) >= 8192:
                    break
            if not batch:
                done, last_id = checkpoint(view), last_cdr_id(view)
                intent = pending_intent(view)
                break
        for c in batch:
            t = totals[(c.rating_group, c.unit, c.currency)]
            t[0] += 1
            t[1] += c.used_units
            t[2] += c.amount
            first_t = c.start_time if first_t is None else min(first_t, c.start_time)
            last_t = c.end_time if last_t is None else max(last_t, c.end_time)
        count += len(batch)
        after = batch[-1].cdr_id
    return {
        "count": count, "last_id": last_id, "exported": done, "pending": last_id - done,
        "unfinished_export": None if intent is None else intent.path,
        "first_time": None if first_t is None else cdrmod.iso(first_t),
        "last_time": None if last_t is None else cdrmod.iso(last_t),
        "by_rating_group": [
            {"rating_group": rg, "unit": unit, "currency": cur, "count": n, "used_units": units,
             "amount": format_micro(amount)}
            for (rg, unit, cur), (n, units, amount) in sorted(totals.items())],
    }


def cmd_stats(args) -> int:  # type: ignore[no-untyped-def]
    store = open_existing(args.data)
    try:
        st = gather_stats(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"CDRs: {st['count']} (last id {st['last_id']}), exported {st['exported']}, "
          f"pending {st['pending']}")
    if st["unfinished_export"]:
        print(f"unfinished export (redone by the next export): {st['unfinished_export']}")
    print(f"time span: {st['first_time'] or '-'} .. {st['last_time'] or '-'}")
    if st["by_rating_group"]:
        print(f"{'rating_group':>12} {'unit':<8} {'cur':<4} {'count':>10} {'used_units':>16} {'amount':>20}")
        for r in st["by_rating_group"]:
            print(f"{r['rating_group']:>12} {r['unit']:<8} {r['currency']:<4} {r['count']:>10} "
                  f"{r['used_units']:>16} {r['amount']:>20}")
    return 0


__all__ = ["gather_stats", "open_existing", "register"]
