"""`ocs rerate --cdrs FILE_OR_DIR --tariffs NEW.toml`: what revenue a new tariff would have made."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal

from balance.money import format_micro
from ocs.cli.common import CommandError, Subparsers, add_data_arg

PROGRESS_FROM = 200_000   # rows; smaller inputs finish before a bar is useful


def register(sub: Subparsers) -> None:
    p = sub.add_parser("rerate", help="re-rate exported CDRs with a new tariff and compare revenue")
    p.add_argument("--cdrs", required=True, metavar="FILE_OR_DIR",
                   help="CDR export: .csv, .jsonl or .parquet file, or a directory of them")
    p.add_argument("--tariffs", required=True, metavar="NEW.toml", help="the tariff to simulate")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-arrow", action="store_true", help="read CSV/JSONL without pyarrow")
    add_data_arg(p)   # accepted for uniformity; re-rating reads no data directory
    p.set_defaults(func=cmd_rerate)


def cmd_rerate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ocs.billing.cdr import columns as cdr_reader
    from ocs.billing.cdr.files import FormatError
    from ocs.billing.rerate import rerate
    from rating.rater import rater_for
    from rating.tariff import TariffError, load_tariff

    try:
        tariff = load_tariff(args.tariffs)
    except TariffError as exc:
        raise CommandError(str(exc)) from None
    try:
        cols = cdr_reader.read(args.cdrs, use_arrow=not args.no_arrow)
    except FormatError as exc:
        raise CommandError(str(exc)) from None
    currencies = set(cols.currency.names)
    if currencies - {tariff.currency}:
        raise CommandError(f"{args.cdrs}: CDRs in {', '.join(sorted(currencies))} but "
                           f"{args.tariffs} is in {tariff.currency}")
    rater = rater_for(tariff, 0)
    bar = tqdm(total=len(cols), unit="cdr", unit_scale=True, desc="rerating", file=sys.stderr,
               disable=len(cols) < PROGRESS_FROM or None)
    try:
        groups = rerate(cols, rater, progress=bar)
    except ValueError as exc:
        raise CommandError(f"{args.cdrs}: {exc}") from None
    finally:
        bar.close()

    total_before = sum(g.revenue_before for g in groups)
    total_after = sum(g.revenue_after for g in groups)
    unrated = sum(g.unrated for g in groups)
    pct = (None if total_before == 0 else  # Decimal, as per group: no float near money
           str((Decimal(total_after - total_before) * 100 / Decimal(total_before)).quantize(Decimal("0.01"))))
    if args.json:
        print(json.dumps({
            "cdrs": len(cols), "currency": tariff.currency, "tariff": args.tariffs,
            "groups": [{"plan": g.plan, "rating_group": g.rating_group, "cdrs": g.cdrs,
                        "units": g.units, "revenue_before": format_micro(g.revenue_before),
                        "revenue_after": format_micro(g.revenue_after),
                        "delta": format_micro(g.delta),
                        "delta_percent": None if g.delta_percent is None else str(g.delta_percent),
                        "unrated": g.unrated} for g in groups],
            "total": {"revenue_before": format_micro(total_before),
                      "revenue_after": format_micro(total_after),
                      "delta": format_micro(total_after - total_before), "delta_percent": pct,
                      "unrated": unrated},
        }, indent=2))
        return 0
    head = (f"{'plan':<12} {'rg':>10} {'cdrs':>10} {'units':>16} {'before':>16} {'after':>16} "
            f"{'delta':>16} {'delta %':>8}")
    print(head)
    print("-" * len(head))
    for g in groups:
        dp = "n/a" if g.delta_percent is None else str(g.delta_percent)
        note = f"  ({g.unrated} unrated)" if g.unrated else ""
        print(f"{g.plan:<12} {g.rating_group:>10} {g.cdrs:>10} {g.units:>16} "
              f"{format_micro(g.revenue_before, 2):>16} {format_micro(g.revenue_after, 2):>16} "
              f"{format_micro(g.delta, 2):>16} {dp:>8}{note}")
    print("-" * len(head))
    print(f"{'total':<12} {'':>10} {len(cols):>10} {'':>16} {format_micro(total_before, 2):>16} "
          f"{format_micro(total_after, 2):>16} {format_micro(total_after - total_before, 2):>16} "
          f"{pct or 'n/a':>8}  {tariff.currency}")
    if unrated:
        print(f"warning: {unrated} CDRs have no rate (or a rate in another unit) in {args.tariffs}; "
              f"their revenue after is counted as 0", file=sys.stderr)
    return 0
