"""The `ocs` console script: discovers the command groups in `ocs.cli` and dispatches."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

from ocs.cli.common import CommandError, ServerError

PRIVATE_UMASK = 0o077        # data dir 0700, files 0600: balances, CDRs, invoices are personal data
GROUP_READABLE_UMASK = 0o027  # --group-readable: the owner's group may read (backups, log shippers)


def ocs_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ocs")
    except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
        return "unknown"


def command_modules() -> list[ModuleType]:
    """The command-group modules here (those with a `register`), by name; each is named after
    its command (`ocs.cli.account` registers `ocs account`)."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"ocs.cli.{info.name}")
        if getattr(module, "register", None) is not None:
            found.append(module)
    return found


def command_names() -> set[str]:
    """The `ocs` commands this installation has."""
    return {m.__name__.rpartition(".")[2] for m in command_modules()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocs", description="Online Charging System")
    parser.add_argument("--version", action="version", version=f"ocs {ocs_version()}")
    parser.add_argument("--group-readable", action="store_true",
                        help="create data, CDR and invoice files readable by the owner's group "
                             "(umask 027; default 077: the owner only)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        module.register(sub)
    return parser


def _stdout_closed() -> int:
    """The reader went away (`ocs account list | head -1`): that is the reader's choice, not an
    error. Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    umask = os.umask(GROUP_READABLE_UMASK if args.group_readable else PRIVATE_UMASK)
    try:
        rc = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        return _stdout_closed()
    except CommandError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    except ServerError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        os.umask(umask)  # a caller in the same process (tests) keeps its own
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
