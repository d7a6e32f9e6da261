"""The type checker CI runs: mypy in strict mode over protocol, rating, balance, ocs and bench
([tool.mypy] in pyproject.toml), and every `# type: ignore` left there gives its reason. Part of
the test command, so `.ci/run` and the README's one command check it without a second step."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                       cwd=REPO, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Success: no issues found" in r.stdout, r.stdout


def test_strict_and_every_ignore_has_a_reason() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert cfg["strict"] is True
    bare = []
    for package in cfg["files"]:
        for path in sorted((REPO / package).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if "type: ignore" in line and not re.search(r"type: ignore\[[a-z-, ]+\]  # \S", line):
                    bare.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not bare, "a # type: ignore needs its code and a reason after it:\n" + "\n".join(bare)
