"""`ocs cdr export|consumers|show|stats`: the stored CDRs, on demand, once per named consumer."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balance.errors import is_write_failure
from balance.money import format_micro
from ocs.billing import cdr as cdrmod
from ocs.billing.export import (
    DEFAULT_CONSUMER,
    FORMATS,
    ExportError,
    FormatError,
    export_pending,
)
from ocs.billing.export.exporter import (
    check_name,
    consumer_names,
    consumer_state,
    drop_consumer,
    last_cdr_id,
)
from ocs.cli.common import CommandError, Subparsers, add_data_arg

if TYPE_CHECKING:
    from balance.store import Store


def open_existing(data: str) -> Store:
    """The store at DIR, which must already hold OCS data (read commands never create it)."""
    from balance.store import open_store
    if not (Path(data) / "data.mdb").exists():
        raise CommandError(f"no OCS data at {data}")
    return open_store(data)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("cdr", help="charging data records: export, consumers, show, stats")
    cmds = p.add_subparsers(dest="cdr_command", metavar="SUBCOMMAND", required=True)

    e = cmds.add_parser("export", help="write every CDR this consumer has not had yet to one file, "
                        "exactly once (also while the server runs)")
    e.add_argument("--out", required=True, metavar="FILE", help="new file to write (must not exist)")
    e.add_argument("--format", default=None, choices=FORMATS,
                   help="csv | jsonl | parquet (default: from the FILE suffix, else csv)")
    e.add_argument("--consumer", default=DEFAULT_CONSUMER, metavar="NAME",
                   help=f"the downstream system, with its own checkpoint (default {DEFAULT_CONSUMER})")
    e.add_argument("--allow-empty", action="store_true",
                   help="with nothing pending, still write FILE (a header only)")
    add_data_arg(e)
    e.set_defaults(func=cmd_export)

    c = cmds.add_parser("consumers", help="the consumers: position, lag, last run; or --drop one")
    c.add_argument("--json", action="store_true")
    c.add_argument("--drop", metavar="NAME", help="remove this consumer's checkpoint and file log")
    add_data_arg(c)
    c.set_defaults(func=cmd_consumers)

    s = cmds.add_parser("show", help="the CDRs of one session")
    s.add_argument("--session", required=True, metavar="ID")
    s.add_argument("--json", action="store_true")
    add_data_arg(s)
    s.set_defaults(func=cmd_show)

    t = cmds.add_parser("stats", help="count, exported to every consumer/pending, totals by rating "
                        "group and unit")
    t.add_argument("--json", action="store_true")
    add_data_arg(t)
    t.set_defaults(func=cmd_stats)


def cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower().lstrip(".")
        fmt = suffix if suffix in FORMATS else "csv"
    try:
        check_name(args.consumer)
    except ExportError as exc:
        raise CommandError(str(exc)) from None
    store = open_existing(args.data)
    try:
        res = export_pending(store, args.out, fmt, args.consumer, allow_empty=args.allow_empty)
    except (ExportError, FormatError) as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:
        if is_write_failure(exc):   # full disk: the next run redoes the unsealed file from scratch
            raise CommandError(f"{args.out}: cannot write ({exc}); the CDRs of the unsealed file stay "
                               f"pending for consumer {args.consumer}: run the export again when "
                               "there is space") from None
        if isinstance(exc, OSError):
            raise CommandError(f"{args.out}: {exc.strerror or exc}") from None
        raise
    finally:
        store.close()
    who = f"consumer {args.consumer}"
    if res.recovered is not None:
        r = res.recovered
        print(f"finished an interrupted export for {who}: {r.last - r.first + 1} CDRs "
              f"(ids {r.first}..{r.last}) in {r.path}")
        if res.path is not None and str(res.path) == r.path:
            return 0
    if res.count:
        print(f"exported {res.count} CDRs (ids {res.first}..{res.last}) for {who} to {args.out}")
    elif res.path is not None:
        print(f"nothing to export for {who}; wrote {args.out} with no rows")
    else:
        print(f"nothing to export for {who}")
    return 0


def list_consumers(store: Store) -> list[dict[str, Any]]:
    with store.read() as view:
        states = [consumer_state(view, n) for n in consumer_names(view)]
    return [{"name": s.name, "position": s.position, "lag": s.lag,
             "last_ran": None if s.last_ran is None else cdrmod.iso(s.last_ran), "files": s.files,
             "unfinished_export": s.unfinished} for s in states]


def cmd_consumers(args: argparse.Namespace) -> int:
    store = open_existing(args.data)
    try:
        if args.drop is not None:
            try:
                if not drop_consumer(store, args.drop):
                    raise CommandError(f"no consumer named {args.drop!r}")
            except ExportError as exc:
                raise CommandError(str(exc)) from None
            print(f"dropped consumer {args.drop}; an export under that name starts again from the "
                  "oldest CDR kept")
            return 0
        rows = list_consumers(store)
        with store.read() as view:
            last = last_cdr_id(view)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"last_cdr_id": last, "consumers": rows}, indent=2))
        return 0
    if not rows:
        print(f"no consumers yet (last CDR id {last})")
        return 0
    print(f"{'consumer':<20} {'position':>12} {'lag':>12} {'files':>7}  last run")
    for r in rows:
        print(f"{r['name']:<20} {r['position']:>12} {r['lag']:>12} {r['files']:>7}  "
              f"{r['last_ran'] or 'never'}" + (f"  (unfinished: {r['unfinished_export']})"
                                              if r["unfinished_export"] else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
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


def gather_stats(store: Store) -> dict[str, Any]:
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
                last_id = last_cdr_id(view)
                states = [consumer_state(view, n) for n in consumer_names(view)]
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
    done = min((s.position for s in states), default=0)   # delivered to every consumer
    return {
        "count": count, "last_id": last_id, "exported": done, "pending": last_id - done,
        "consumers": {s.name: s.position for s in states},
        "unfinished_export": next((s.unfinished for s in states if s.unfinished), None),
        "first_time": None if first_t is None else cdrmod.iso(first_t),
        "last_time": None if last_t is None else cdrmod.iso(last_t),
        "by_rating_group": [
            {"rating_group": rg, "unit": unit, "currency": cur, "count": n, "used_units": units,
             "amount": format_micro(amount)}
            for (rg, unit, cur), (n, units, amount) in sorted(totals.items())],
    }


def cmd_stats(args: argparse.Namespace) -> int:
    store = open_existing(args.data)
    try:
        st = gather_stats(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"CDRs: {st['count']} (last id {st['last_id']}), exported to every consumer "
          f"{st['exported']}, pending {st['pending']}")
    if st["consumers"]:
        print("consumers: " + ", ".join(f"{n} at {pos}" for n, pos in st["consumers"].items()))
    if st["unfinished_export"]:
        print(f"unfinished export (redone by the next export): {st['unfinished_export']}")
    print(f"time span: {st['first_time'] or '-'} .. {st['last_time'] or '-'}")
    if st["by_rating_group"]:
        print(f"{'rating_group':>12} {'unit':<8} {'cur':<4} {'count':>10} {'used_units':>16} {'amount':>20}")
        for r in st["by_rating_group"]:
            print(f"{r['rating_group']:>12} {r['unit']:<8} {r['currency']:<4} {r['count']:>10} "
                  f"{r['used_units']:>16} {r['amount']:>20}")
    return 0


__all__ = ["gather_stats", "list_consumers", "open_existing", "register"]
