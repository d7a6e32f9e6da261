"""`ocs webhook create|list|delete|deliveries|events|threshold`: notifications to other systems.

A subscription's secret is made here (or given) and printed once; the engine keeps it to sign
each POST (ocs.api.webhooks documents the scheme). Delivery runs in the API process of
`ocs serve` (also with --no-api) or in `ocs api`.
"""

from __future__ import annotations

import argparse
import json
import secrets

from ocs.cli.common import CommandError, Subparsers, add_data_arg, engine, format_instant


def register(sub: Subparsers) -> None:
    p = sub.add_parser("webhook", help="webhook subscriptions, deliveries and thresholds")
    cmds = p.add_subparsers(dest="webhook_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser("create", help="subscribe a URL to events; its secret is printed once")
    add_data_arg(c)
    c.add_argument("--url", required=True)
    c.add_argument("--events", required=True, help="comma-separated event types, or * for all")
    c.add_argument("--secret", help="the HMAC key (default: a new random one)")
    c.set_defaults(func=cmd_create)
    c = cmds.add_parser("list", help="the subscriptions (never their secrets)")
    add_data_arg(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_list)
    c = cmds.add_parser("delete", help="delete a subscription; its pending deliveries are cancelled")
    add_data_arg(c)
    c.add_argument("id")
    c.set_defaults(func=cmd_delete)
    c = cmds.add_parser("deliveries", help="the delivery log: state, attempts, last outcome")
    add_data_arg(c)
    c.add_argument("--subscription")
    c.add_argument("--state", choices=("pending", "delivered", "failed", "cancelled"))
    c.add_argument("--limit", type=int, default=100)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_deliveries)
    c = cmds.add_parser("events", help="the events in the outbox, oldest first")
    add_data_arg(c)
    c.add_argument("--after", type=int, default=0, help="events after this position")
    c.add_argument("--type")
    c.add_argument("--account")
    c.add_argument("--limit", type=int, default=100)
    c.set_defaults(func=cmd_events)
    c = cmds.add_parser("threshold", help="set the low-balance threshold of an account or plan")
    add_data_arg(c)
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--account")
    who.add_argument("--plan")
    c.add_argument("--low-balance", required=True, metavar="AMOUNT",
                   help="decimal amount, or none to clear it")
    c.set_defaults(func=cmd_threshold)


def cmd_create(args: argparse.Namespace) -> int:
    secret = args.secret or "whsec_" + secrets.token_urlsafe(32)
    events = [e.strip() for e in args.events.split(",") if e.strip()]
    with engine(args.data) as run:
        sub = run.run("webhook.create", url=args.url, events=events, secret=secret)
    print(f"created webhook {sub['id']} -> {sub['url']} ({', '.join(sub['events'])}); "
          "its secret, shown only now:")
    print(secret)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with engine(args.data) as run:
        subs = run.run("webhook.list")
    if args.json:
        print(json.dumps(subs))
        return 0
    for s in subs:
        print(f"{s['id']:8} {s['url']}  {','.join(s['events'])}  created {format_instant(s['created'])}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with engine(args.data) as run:
        sub = run.run("webhook.delete", sub_id=args.id)
    print(f"deleted webhook {sub['id']} ({sub['url']})")
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise CommandError("--limit must be 1..10000")
    with engine(args.data) as run:
        rows = run.run("webhook.deliveries", subscription=args.subscription, state=args.state,
                       limit=args.limit)
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        last = f"last {r['last_status'] or r['last_error'] or '-'}"
        print(f"{r['subscription']:8} {r['event']:12} {r['type'] or '?':22} {r['state']:10} "
              f"attempts {r['attempts']}  {last}")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise CommandError("--limit must be 1..10000")
    from ocs.api.webhooks import body
    with engine(args.data) as run:
        rows = run.run("webhook.events", after=args.after, type=args.type, account=args.account,
                       limit=args.limit)
    for e in rows:
        print(body(e).decode())
    return 0


def cmd_threshold(args: argparse.Namespace) -> int:
    from balance.money import MoneyError, format_micro, to_micro
    low: int | None = None
    if args.low_balance.lower() != "none":
        try:
            low = to_micro(args.low_balance)
        except MoneyError as exc:
            raise CommandError(f"--low-balance: {exc}") from None
    with engine(args.data) as run:
        done = run.run("alert.set", low_balance=low, ident=args.account, plan=args.plan)
    target = f"account {done['account']}" if done["account"] else f"plan {done['plan']}"
    print(f"{target}: low-balance threshold "
          f"{'cleared' if low is None else format_micro(low)}")
    return 0
