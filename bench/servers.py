"""Start a server under test as a child process, wait for its ready line, stop it by pid.

Every server the bench drives (ours, the echo ceiling, the python-diameter peer) prints
`OCS ready HOST:PORT` on stdout once it accepts connections, so one launcher serves all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

READY = "OCS ready "


class ServerError(RuntimeError):
    """The server did not come up, or did not stop cleanly."""


@dataclass
class Launched:
    name: str
    proc: subprocess.Popen[str]
    host: str
    port: int
    log_path: Path | None
    output: list[str] = field(default_factory=list)
    api: str = ""  # HOST:PORT of its HTTP API, when the ready line names one

    @property
    def pid(self) -> int:
        return self.proc.pid


def launch(name: str, argv: list[str], *, ready_timeout: float = 90.0,
           log_path: Path | None = None, env: dict[str, str] | None = None) -> Launched:
    """Run argv, wait (bounded) for the ready line; stderr goes to log_path (or is discarded)."""
    log = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                stderr=log if log is not None else subprocess.DEVNULL, text=True,
                                env={**os.environ, **(env or {})})
    finally:
        if log is not None:
            log.close()
    lines: list[str] = []
    ready: list[str] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not found.is_set() and line.startswith(READY):
                ready.append(line)
                found.set()
            elif len(lines) < 1000:
                lines.append(line)
        found.set()

    threading.Thread(target=reader, daemon=True, name=f"{name}-stdout").start()
    if not found.wait(ready_timeout) or not ready:
        _kill(proc)
        tail = _tail(log_path)
        raise ServerError(f"{name} did not print its ready line within {ready_timeout:.0f} s"
                          f" (exit code {proc.poll()}){tail}")
    words = ready[0][len(READY):].split()
    host, _, port = words[0].rpartition(":")
    api = next((w.split("=", 1)[1] for w in words if w.startswith("api=")), "")
    return Launched(name, proc, host.strip("[]"), int(port), log_path, lines, api)


def _tail(log_path: Path | None, n: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").strip().splitlines()[-n:]
    return ("; stderr:\n  " + "\n  ".join(text)) if text else ""


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def stop(server: Launched, timeout: float = 30.0) -> int:
    """SIGTERM by pid, wait up to timeout, then SIGKILL. Returns the exit code."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise ServerError(f"{server.name} (pid {proc.pid}) did not stop within "
                              f"{timeout:.0f} s of SIGTERM; killed") from None
    return proc.returncode


def cmdline(pid: int) -> str:
    """A process's command line, NULs as spaces (empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def ocs_serve_argv(data_dir: str | os.PathLike[str], *, no_sync: bool = False, workers: int = 1,
                   origin_realm: str = "ocs", extra: list[str] | None = None) -> list[str]:
    argv = [sys.executable, "-m", "ocs", "serve", "--data", os.fspath(data_dir),
            "--listen", "127.0.0.1:0", "--origin-host", "ocs.bench", "--origin-realm",
            origin_realm]
    if no_sync:
        argv.append("--no-sync")
    if workers > 1:
        argv += ["--workers", str(workers)]
    extra = extra or []
    if not any(a.startswith("--api") or a == "--no-api" for a in extra):
        argv.append("--no-api")  # a benchmark measures charging unless it asks for the API
    return argv + extra


def echo_argv() -> list[str]:
    return [sys.executable, "-m", "bench.echo_server", "--listen", "127.0.0.1:0"]


def peer_argv(*, accounts: int, balance: str, tariff: Path, realm: str = "ocs",
              clients: int = 256) -> list[str]:
    return [sys.executable, "-m", "bench.peer_pydiameter", "--listen", "127.0.0.1:0",
            "--realm", realm, "--accounts", str(accounts), "--balance", balance,
            "--tariff", str(tariff), "--clients", str(clients)]

