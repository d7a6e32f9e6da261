"""What the `ocs` command groups share. One module per group in `ocs.cli`; each exposes `register(subparsers)`.

`ocs.cli` discovers the modules beside this one, so adding a command group never edits a shared file.
A command signals a user error by raising `CommandError`: the CLI prints it on one line and exits 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from balance.store import Store
    from ocs.charging.control.client import Runner


class CommandError(Exception):
    """A bad argument, file or state named in one line; the command changed nothing."""


class ServerError(Exception):
    """The server could not apply the command or went away before answering (exit 1)."""


@contextmanager
def engine(data: str, *, create: bool = False) -> Iterator[Runner]:
    """Run commands (ocs.charging.commands) on the data dir: through the running server's engine
    when one serves it, on LMDB directly when none does. `create` makes a missing data dir."""
    from ocs.charging.control.client import Failed, Refused, session
    try:
        with session(data, create=create) as runner:
            yield runner
    except Refused as exc:
        raise CommandError(str(exc)) from None
    except Failed as exc:
        raise ServerError(str(exc)) from None


DEFAULT_DATA = "./ocs-data"

# What each group's register() is given: the `ocs` parser's table of subcommands. A string because
# argparse's class is generic only to the type checker.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, metavar="DIR",
                        help=f"data directory (LMDB environment), default {DEFAULT_DATA}")


def require_data(data: str) -> None:
    """Refuse a data dir that holds no OCS store: a typo in --data must not read (or create) an
    empty one and answer as if it were the real, empty, system."""
    if not (Path(data) / "data.mdb").exists():
        raise CommandError(f"no OCS data at {data}")


def open_existing(data: str) -> Store:
    """The store at DIR, which must already hold OCS data (`ocs tariff load` and `ocs serve` create one)."""
    from balance.store import open_store
    require_data(data)
    try:
        return open_store(data)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot open data dir {data}: {exc}") from None


def parse_instant(text: str, what: str) -> int:
    """ISO 8601 -> unix seconds (no zone = UTC), 1970 .. 9999 UTC, or a one-line CommandError."""
    from ocs.instants import parse_instant as parse
    try:
        return parse(text, what)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def format_instant(ts: int) -> str:
    from ocs.instants import format_instant as fmt
    return fmt(ts)
