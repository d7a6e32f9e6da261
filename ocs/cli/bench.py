"""`ocs bench`: the load generator (bench/loadgen.py) as an ocs command.

Unlike the other commands, --data has no ./ocs-data default: a benchmark provisions accounts and
spends their money, so by default it works on a temp data dir of its own and never on yours; given
yours (--data), it writes its tariff and accounts there only with --provision.
"""

from __future__ import annotations

import argparse

from ocs.cli.common import CommandError, Subparsers


def register(sub: Subparsers) -> None:
    from bench.loadgen import __doc__ as doc
    from bench.loadgen import add_arguments

    p = sub.add_parser("bench", help="load-test an OCS with Gy traffic (--compare: vs ceiling and "
                                     "python-diameter)",
                       description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.loadgen import BenchError, execute

    try:
        return execute(args)
    except BenchError as exc:
        raise CommandError(str(exc)) from None
