"""`ocs reconcile --data DIR [--cdrs DIR]`: revenue assurance; exit 1 when anything disagrees."""

from __future__ import annotations

import argparse
import json

from ocs.billing.cdr.files import FormatError
from ocs.cli.common import CommandError, Subparsers, add_data_arg, open_existing


def register(sub: Subparsers) -> None:
    p = sub.add_parser("reconcile", help="cross-check ledger, balances, reservations, CDRs and files")
    p.add_argument("--cdrs", metavar="DIR", help="also check the exported CDR files under DIR")
    p.add_argument("--json", action="store_true")
    add_data_arg(p)
    p.set_defaults(func=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from ocs.billing.reconcile import reconcile
    store = open_existing(args.data)
    try:
        report = reconcile(store, args.cdrs)
    except FormatError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("checked: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()))
        for d in report.discrepancies:
            print(d)
        print("OK: no discrepancy" if report.ok else f"FAILED: {len(report.discrepancies)} discrepancies")
    return 0 if report.ok else 1
