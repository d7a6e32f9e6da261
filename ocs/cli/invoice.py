"""`ocs invoice --cdrs DIR --period YYYY-MM --out DIR`: the period's invoices, idempotently."""

from __future__ import annotations

import argparse
import sys

from balance.money import format_micro, to_micro
from ocs.billing.cdr.files import FormatError
from ocs.cli.common import CommandError, Subparsers, add_data_arg, open_existing


def register(sub: Subparsers) -> None:
    p = sub.add_parser("invoice", help="invoice a period from exported CDRs (JSON, HTML, PDF, CSV)")
    p.add_argument("--cdrs", required=True, metavar="DIR", help="exported CDR files (or one file)")
    p.add_argument("--period", required=True, metavar="YYYY-MM", help="calendar month, UTC")
    p.add_argument("--out", required=True, metavar="DIR", help="where the documents go")
    p.add_argument("--formats", default="json,html,pdf", metavar="LIST",
                   help="documents per invoice, comma separated: json,html,pdf (default all)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="processes rendering documents (default: one per CPU)")
    add_data_arg(p)
    p.set_defaults(func=cmd_invoice)


def cmd_invoice(args: argparse.Namespace) -> int:
    from ocs.billing.invoice import Period, PeriodError, run
    from ocs.billing.invoice.rounding import minor_units
    from ocs.billing.invoice.run import DOC_FORMATS
    try:
        period = Period.parse(args.period)
    except PeriodError as exc:
        raise CommandError(str(exc)) from None
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in DOC_FORMATS]
    if bad:
        raise CommandError(f"unknown document format {bad[0]!r} (json, html, pdf)")
    if args.jobs is not None and args.jobs < 1:
        raise CommandError(f"--jobs must be at least 1, not {args.jobs}")
    store = open_existing(args.data)
    try:
        result = run(store, args.cdrs, period, args.out, formats=formats, jobs=args.jobs)
    except FormatError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or args.out}: {exc.strerror or exc}") from None
    finally:
        store.close()
    for w in result.warnings:
        print(f"ocs: warning: {w}", file=sys.stderr)
    totals: dict[str, int] = {}
    for d in result.docs:
        totals[d["currency"]] = totals.get(d["currency"], 0) + to_micro(d["total"])
    summary = ", ".join(f"{cur} {format_micro(v, minor_units(cur))}" for cur, v in sorted(totals.items()))
    first = result.docs[0]["number"] if result.docs else "-"
    last = result.docs[-1]["number"] if result.docs else "-"
    print(f"{len(result.docs)} invoices for {period.label} ({first}..{last}) from {result.cdrs} CDRs "
          f"in {result.files} files; total {summary or '0'}; written to {args.out}")
    return 0
