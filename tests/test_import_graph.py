"""The floor plan holds: dependencies point down, and no two modules import each other.

Order, bottom up: protocol (the wire) | balance.money | rating, balance | ocs top (config,
metrics, link, heap, lifeline, client) | ocs.charging, ocs.billing | ocs.front (never the store's
or the rules' code on its import path) | ocs.cli | bench. Every `import` and `from` of our
packages counts, at module level or inside a function; a function-level import that crosses a
line on purpose is listed in LAZY with its reason. Imports under `if TYPE_CHECKING:` load nothing
at run time (they name a type for the checker, as `ocs.front.peer` names the Server that owns it)
and are not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("protocol", "rating", "balance", "ocs", "bench")
WATCHED = ("lmdb", "numba")  # third-party imports the front must not make

# (importer, imported) -> why it is allowed, each only inside a function.
LAZY = {
    ("ocs.front.server", "balance.store"): "the housekeeping thread reads the store (gauges)",
    ("ocs.front.server", "balance.totals"): "the reserved-money gauge",
    ("ocs.front.server", "ocs.charging.credit"): "the server's dbs",
    ("ocs.front.server", "ocs.charging.counters"): "the open-session count (gauge)",
    ("ocs.front.server", "ocs.billing.export.exporter"): "continuous CDR export, in housekeeping",
    ("ocs.front.server", "ocs.billing.export.health"): "the export's failing/working state, the same",
    ("ocs.front.server", "balance.errors"): "telling a full disk from a bug at shutdown",
    ("ocs.cli.bench", "bench.loadgen"): "`ocs bench` runs the load generator",
    ("ocs.cli.demo_run", "bench.client"): "`ocs demo` drives traffic with the bench client",
    ("ocs.cli.demo_run", "bench.provision"): "the same: it provisions the subscribers",
    ("ocs.cli.demo_run", "bench.servers"): "the same: it starts and stops the server",
    ("ocs.cli.demo_run", "bench.workload"): "the same: the first subscriber's id, for the API example",
}


def _modules() -> dict[str, Path]:
    """Our packages as they sit in the checkout (not via sys.path, where tests/rating and
    tests/balance, folders without __init__.py, could stand in for the real ones)."""
    found = {}
    for pkg in OURS:
        root = REPO / pkg
        assert (root / "__init__.py").is_file(), pkg
        for path in root.rglob("*.py"):
            parts = (pkg, *path.relative_to(root).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at function level?) for every import in one module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
              for n in ast.walk(f)}
    typing_only = {id(n) for f in ast.walk(tree) if isinstance(f, ast.If) and _is_type_checking(f.test)
                   for n in ast.walk(f)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        lazy = id(node) in nested
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, lazy
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            yield from ((s, lazy) for s in subs)
            if len(subs) < len(node.names):
                yield target, lazy


def _edges() -> list[tuple[str, str, bool]]:
    out = []
    for name, path in MODULES.items():
        for target, lazy in _imports(name, path):
            top = target.split(".")[0]
            if top in OURS or top in WATCHED:
                out.append((name, target, lazy))
    return out


EDGES = _edges()


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _up(src: str, dst: str) -> str | None:
    """Why src -> dst points up, or None."""
    if _within(src, "protocol") and not _within(dst, "protocol") and dst.split(".")[0] in OURS:
        return "protocol imports nothing of ours"
    if _within(src, "rating", "balance") and _within(dst, "ocs", "bench"):
        return "rating and balance import neither ocs nor bench"
    if _within(src, "rating") and _within(dst, "balance") and dst not in ("balance.money", "balance.schema"):
        return ("rating may use balance.money (the money format at the bottom of both) and "
                "balance.schema (the one owner of the environment's keys and encodings) only")
    if _within(src, "balance") and _within(dst, "rating"):
        return "balance knows nothing of tariffs"
    if _within(src, "ocs.front") and _within(dst, "ocs.charging", "ocs.billing", "ocs.cli", *WATCHED):
        return "the front loads neither the store, numba, the rules nor billing"
    if _within(src, "ocs.charging", "ocs.billing", "ocs.front") and _within(dst, "ocs.api"):
        return "only the CLI imports the API (the front starts it as a process)"
    if _within(src, "ocs.api") and _within(dst, "ocs.front", "ocs.billing", *WATCHED):
        return "the API reaches state through the engine's control channel only"
    if _within(src, "ocs.charging", "ocs.billing") and _within(dst, "ocs.front", "ocs.cli"):
        return "the engine and billing know nothing of the front or the CLI"
    if _within(src, "ocs") and not _within(src, "ocs.cli") and _within(dst, "bench"):
        return "ocs imports bench only in the CLI command that runs it"
    if _within(src, "ocs") and not _within(src, "ocs.cli", "ocs.__main__") and _within(dst, "ocs.cli"):
        return "nothing below the CLI imports it"
    return None


def test_the_graph_was_read() -> None:
    """Guards the test itself: it sees the modules and the edges it is about."""
    assert {"protocol.ccr", "ocs.front.server", "ocs.charging.engine", "ocs.cli"} <= set(MODULES)
    assert ("ocs.front.dispatch", "ocs.link", False) in EDGES
    assert ("ocs.charging.engine", "lmdb", False) in EDGES
    assert ("ocs.front.server", "balance.store", True) in EDGES
    assert not any(s == "ocs.front.peer" and d == "ocs.front.server" for s, d, _ in EDGES)  # typing only


def test_dependencies_point_down() -> None:
    wrong = []
    for src, dst, lazy in EDGES:
        why = _up(src, dst)
        if why is None:
            continue
        if lazy and (src, dst) in LAZY:
            continue
        wrong.append(f"{src} -> {dst}{' (in a function)' if lazy else ''}: {why}")
    assert wrong == []


def test_every_allowed_lazy_edge_is_still_needed_and_lazy() -> None:
    seen = {(s, d): lazy for s, d, lazy in EDGES if (s, d) in LAZY}
    assert set(seen) == set(LAZY), "an allowed edge is gone: drop it from LAZY"
    assert all(seen.values()), "an allowed edge moved to module level"


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for src, dst, _ in EDGES:
        if dst in MODULES and dst != src:
            graph[src].add(dst)
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif state[nxt] == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("module", ["ocs.front.server", "ocs.front.dispatch", "ocs.front.peer"])
def test_the_front_starts_without_the_store_or_numba(module: str) -> None:
    """In a fresh interpreter: importing the front loads no LMDB, numba or charging code."""
    probe = (f"import sys, {module}; "
             "bad = sorted(m for m in sys.modules if m in ('lmdb', 'numba') "
             "or m.startswith(('ocs.charging', 'ocs.billing', 'balance', 'rating'))); print(bad)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["ocs.api.app", "ocs.api.process", "ocs.api.usage"])
def test_the_api_starts_without_the_store_or_numba(module: str) -> None:
    """In a fresh interpreter: the API process loads no LMDB, numba, billing or engine rules (it
    reaches state through the control channel; a route module that imported a command module
    once pulled them all in, which the edge-by-edge check above does not see)."""
    probe = (f"import sys, {module}; "
             "bad = sorted(m for m in sys.modules if m in ('lmdb', 'numba') "
             "or m.startswith(('ocs.billing', 'ocs.front', 'balance.store', 'rating.rater', "
             "'ocs.charging.commands', 'ocs.charging.credit'))); print(bad)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
