"""`ocs apikey create|list|revoke`: the keys of the HTTP API (ocs.charging.access).

The secret is made here and printed once; only its SHA-256 is sent to the engine and stored.
"""

from __future__ import annotations

import argparse
import json

from ocs.cli.common import CommandError, Subparsers, add_data_arg, engine, format_instant


def register(sub: Subparsers) -> None:
    from ocs.charging.access import ROLES
    p = sub.add_parser("apikey", help="create, list and revoke API keys")
    cmds = p.add_subparsers(dest="apikey_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser("create", help="create a key; its secret is printed once")
    add_data_arg(c)
    c.add_argument("--name", required=True, help="what the key is for, e.g. crm-prod")
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--account", help="selfcare: the one account the key may see")
    c.set_defaults(func=cmd_create)
    c = cmds.add_parser("list", help="every key (never its secret)")
    add_data_arg(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_list)
    c = cmds.add_parser("revoke", help="revoke a key: refused from the next request on")
    add_data_arg(c)
    c.add_argument("name")
    c.set_defaults(func=cmd_revoke)


def cmd_create(args: argparse.Namespace) -> int:
    from ocs.charging.access import digest, new_secret
    secret = new_secret()
    with engine(args.data) as run:
        key = run.run("apikey.create", name=args.name, role=args.role, account=args.account,
                      digest=digest(secret))
    print(f"created API key {key['name']} (role {key['role']}"
          f"{', account ' + key['account'] if key['account'] else ''}); its secret, shown only now:")
    print(secret)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with engine(args.data) as run:
        keys = run.run("apikey.list")
    if args.json:
        print(json.dumps(keys))
        return 0
    for k in keys:
        state = f"revoked {format_instant(k['revoked'])}" if k["revoked"] else "live"
        print(f"{k['name']:24} {k['role']:9} {k['account'] or '-':16} created "
              f"{format_instant(k['created'])} {state}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with engine(args.data) as run:
        key = run.run("apikey.revoke", name=args.name)
    if key is None:  # pragma: no cover - the command refuses instead
        raise CommandError(f"no API key {args.name!r}")
    print(f"revoked API key {key['name']}")
    return 0
