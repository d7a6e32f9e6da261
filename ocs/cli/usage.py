"""`ocs usage ACCOUNT [--since T] [--until T] [--cdrs]`: what an account used, per rating group,
from its CDRs ending in [since, until); --cdrs prints the CDRs themselves, one JSON per line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from balance.money import format_micro
from ocs.charging.usage_sums import UsageKey, add_usage
from ocs.cli.common import CommandError, Subparsers, add_data_arg, engine, parse_instant


def register(sub: Subparsers) -> None:
    p = sub.add_parser("usage", help="an account's usage per rating group (or its CDRs)")
    add_data_arg(p)
    p.add_argument("account", help="account id or alias")
    p.add_argument("--since", help="CDRs ending at or after (ISO 8601, UTC)")
    p.add_argument("--until", help="CDRs ending before")
    p.add_argument("--cdrs", action="store_true", help="the CDRs, one JSON object per line")
    p.set_defaults(func=cmd_usage)


def cmd_usage(args: argparse.Namespace) -> int:
    rng = {"since": None if args.since is None else parse_instant(args.since, "--since"),
           "until": None if args.until is None else parse_instant(args.until, "--until")}
    if rng["since"] is not None and rng["until"] is not None and rng["until"] <= rng["since"]:
        raise CommandError("--until must be later than --since")
    with engine(args.data) as run:
        if args.cdrs:
            after: int | None = 0
            while after is not None:
                got = run.run("cdr.list", ident=args.account, after=after, limit=1000, **rng)
                for c in got["cdrs"]:
                    print(json.dumps({**c, "amount": format_micro(c["amount"])}))
                after = got["next"]
            return 0
        sums: dict[UsageKey, dict[str, Any]] = {}
        after = 0
        while after is not None:
            got = run.run("usage.summary", ident=args.account, after=after, **rng)
            add_usage(sums, got["groups"])
            after = got["next"]
    print(f"{'rating group':>12} {'unit':8} {'CDRs':>8} {'used':>14} {'of it bundles':>14} amount")
    for (rg, unit, currency), g in sorted(sums.items()):
        print(f"{rg:>12} {unit:8} {g['cdrs']:>8} {g['used_units']:>14} {g['bundle_units']:>14} "
              f"{format_micro(g['amount'])} {currency}")
    return 0
