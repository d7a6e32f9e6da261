"""`ocs version [--json]`: the versions that decide behaviour, for a bug report."""

from __future__ import annotations

import argparse
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ocs.cli.common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("version", help="versions of ocs, Python, LMDB and the libraries it runs on")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_version)


def _dist(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    import lmdb

    from ocs.cli import ocs_version
    return {"ocs": ocs_version(), "python": platform.python_version(),
            "lmdb": ".".join(map(str, lmdb.version())), "py-lmdb": lmdb.__version__,
            **{name: _dist(name) for name in ("numba", "uvloop", "numpy", "msgpack")}}


def cmd_version(args: argparse.Namespace) -> int:
    found = versions()
    if args.json:
        print(json.dumps(found))
    else:
        for name, ver in found.items():
            print(f"{name:8} {ver or 'not installed'}")
    return 0
