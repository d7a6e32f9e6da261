"""One module per `ocs` subcommand group; each exposes `register(subparsers)`.

`ocs.cli` discovers the modules here, so adding a command group never edits a shared file.
A command signals a user error by raising `CommandError`: the CLI prints it on one line and exits 2.
"""


class CommandError(Exception):
    """A bad argument, file or state named in one line; the command changed nothing."""


DEFAULT_DATA = "./ocs-data"


def add_data_arg(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--data", default=DEFAULT_DATA, metavar="DIR",
                        help=f"data directory (LMDB environment), default {DEFAULT_DATA}")
