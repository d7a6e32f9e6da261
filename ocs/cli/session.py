"""`ocs session list ACCOUNT | abort SESSION-ID`: an account's open sessions, and ending one.

Abort releases the session's holds and charges its usage so far (CDRs with termination cause
ABORTED); the gateway's next request for it gets 5002. Through the running engine, if any.
"""

from __future__ import annotations

import argparse
import json

from balance.money import format_micro
from ocs.cli.common import Subparsers, add_data_arg, engine, format_instant


def register(sub: Subparsers) -> None:
    p = sub.add_parser("session", help="open credit-control sessions: list, abort")
    cmds = p.add_subparsers(dest="session_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser("list", help="the open sessions of an account")
    add_data_arg(c)
    c.add_argument("account", help="account id or alias")
    c.add_argument("--json", action="store_true", help="one JSON object per line")
    c.set_defaults(func=cmd_list)
    c = cmds.add_parser("abort", help="end an open session now (holds released, usage charged)")
    add_data_arg(c)
    c.add_argument("session_id")
    c.set_defaults(func=cmd_abort)


def _line(s: dict[str, object]) -> str:
    groups = s["groups"]
    assert isinstance(groups, list)
    used = ", ".join(f"rg {g['rating_group']}: {g['used_units']} {g['unit']} "
                     f"{format_micro(g['amount'])}" for g in groups)
    started, seen = s["started"], s["last_seen"]
    assert isinstance(started, int) and isinstance(seen, int)
    return (f"{s['id']}  started {format_instant(started)}  last seen {format_instant(seen)}  "
            f"{s['origin_host']}  {used or 'nothing used'}")


def cmd_list(args: argparse.Namespace) -> int:
    after = ""
    with engine(args.data) as run:
        while True:  # the engine looks at a bounded number of sessions per call
            got = run.run("session.list", ident=args.account, after=after, limit=1000)
            for s in got["sessions"]:
                print(json.dumps(s) if args.json else _line(s))
            if got["next"] is None:
                return 0
            after = got["next"]


def cmd_abort(args: argparse.Namespace) -> int:
    with engine(args.data) as run:
        s = run.run("session.abort", session_id=args.session_id)
    print(f"aborted {s['id']} of account {s['account']}: holds released, usage charged")
    return 0
