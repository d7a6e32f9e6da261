"""`ocs demo`: start a server, provision subscribers, run traffic, bill it, print a summary.

Takes --dir (default ./ocs-demo) rather than --data: the demo always makes a fresh data dir of
its own and refuses to touch one it did not make.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ocs.cli.common import CommandError, Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="run the main job end to end on a fresh data dir",
                       description=__doc__)
    p.add_argument("--dir", "--data", dest="dir", type=Path, default=Path("ocs-demo"),
                   metavar="DIR", help="data dir the demo creates (default ./ocs-demo)")
    p.add_argument("--subscribers", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of traffic (default 20)")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ocs.cli.demo_run import MARKER, DemoOptions, main_demo

    if args.subscribers < 1:
        raise CommandError("--subscribers must be >= 1")
    if args.subscribers > 100_000_000:
        raise CommandError("--subscribers must be <= 100000000")
    if not 0 < args.seconds <= 3600:
        raise CommandError("--seconds must be in (0, 3600]")
    if not 1 <= args.connections <= 9999:
        raise CommandError("--connections must be in 1..9999")
    d = args.dir
    if d.exists() and not (d / MARKER).exists() and (not d.is_dir() or any(d.iterdir())):
        raise CommandError(f"{d} exists and was not made by ocs demo; remove it or pass --dir")
    return main_demo(DemoOptions(dir=args.dir, subscribers=args.subscribers,
                                 seconds=args.seconds, connections=args.connections,
                                 progress=not args.no_progress))
