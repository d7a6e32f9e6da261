"""`ocs audit show [--since T] [--account ID]`: the audit trail of changes (ocs.charging.audit)."""

from __future__ import annotations

import argparse
import json

from ocs.cli.common import Subparsers, add_data_arg, engine, format_instant, parse_instant


def register(sub: Subparsers) -> None:
    p = sub.add_parser("audit", help="the audit trail of changes made by the CLI and the API")
    cmds = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser("show", help="entries oldest first")
    add_data_arg(c)
    c.add_argument("--since", metavar="ISO8601")
    c.add_argument("--account", metavar="ID")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    since = parse_instant(args.since, "--since") if args.since else None
    out = []
    with engine(args.data) as run:
        after = 0
        while True:
            page = run.run("audit.list", after=after, since=since, account=args.account)
            out.extend(page)
            if not page:
                break
            after = page[-1]["position"]
    if args.json:
        print(json.dumps(out))
        return 0
    for e in out:
        print(f"{e['position']:6} {format_instant(e['at'])} {e['actor']:20} {e['command']:16} "
              f"{e.get('account') or '-':16} {json.dumps(e.get('outcome'))}")
    return 0
