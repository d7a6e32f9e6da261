"""Start the real `ocs serve` on 127.0.0.1 over a temp data dir, provision it, stop it by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from balance import ops
from balance.money import to_micro
from balance.store import open_store
from rating.tariff_store import TariffStore

TARIFF = """
currency = "EUR"

[[plan]]
name = "default"

[[plan]]
name = "single"

[[rate]]
plan = "single"
rating_group = "*"
unit = "seconds"
price = "0.01"
increment = 60

[[plan]]
name = "redirecting"
final_unit_action = "redirect"
redirect_address = "http://topup.example.net/"

[[rate]]
rating_group = 100
unit = "seconds"
price = "0.01"
increment = 60

[[rate]]
rating_group = 200
unit = "octets"
price = "0.01"
increment = 1048576

[[rate]]
rating_group = 300
unit = "events"
price = "0.05"
increment = 1

[[rate]]
plan = "redirecting"
rating_group = 200
unit = "octets"
price = "0.01"
increment = 1048576
"""


def provision(data: Path, accounts: dict[str, dict], tariff: str = TARIFF) -> None:
    """Accounts as {id: {"balance": "10", "credit_limit": "0", "plan": ..., "imsi": ..., "bundles": [...]}}."""
    store = open_store(data)
    try:
        TariffStore(store).load(tariff, "test-tariff.toml", effective_from=0)
        for account_id, spec in accounts.items():
            def create(tx, account_id=account_id, spec=spec):  # type: ignore[no-untyped-def]
                ops.create_account(tx, f"create:{account_id}", account_id=account_id,
                                   currency=spec.get("currency", "EUR"),
                                   balance=to_micro(spec.get("balance", "0")),
                                   credit_limit=to_micro(spec.get("credit_limit", "0")),
                                   plan=spec.get("plan", "default"),
                                   aliases=[spec["imsi"]] if spec.get("imsi") else [])
                for i, b in enumerate(spec.get("bundles", [])):
                    ops.add_bundle(tx, f"bundle:{account_id}:{i}", account_id, unit=b["unit"],
                                   amount=b["amount"], rating_groups=b.get("rating_groups", ()),
                                   expires=b.get("expires"))
                if spec.get("status"):
                    ops.set_status(tx, f"status:{account_id}", account_id, spec["status"])
            store.execute(create)
    finally:
        store.close()


def account(data: Path, account_id: str):  # type: ignore[no-untyped-def]
    store = open_store(data)
    try:
        with store.read() as view:
            return view.get_account(account_id)
    finally:
        store.close()


@dataclass
class RunningServer:
    data: Path
    proc: subprocess.Popen
    host: str = "127.0.0.1"
    port: int = 0
    addresses: list[str] = field(default_factory=list)
    stderr_path: Path | None = None
    api: str = ""  # the HTTP API's HOST:PORT, when it serves one

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path and self.stderr_path.exists() else ""

    def engine_pid(self) -> int:
        """The pid of the charging engine among the server's children (the API process, which
        also runs the webhook worker, is the other one)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if ppid == self.proc.pid and b"ocs.charging.engine" in argv:
                found.append(int(entry))
        assert len(found) == 1, found
        return found[0]


def start_server(data: Path, *extra: str, timeout: float = 60.0) -> RunningServer:
    """`ocs serve --listen 127.0.0.1:0` as a subprocess; returns once it printed its ready line."""
    data.mkdir(parents=True, exist_ok=True)
    err = data.parent / f"{data.name}-server-{time.monotonic_ns()}.log"
    api = [] if any(a.startswith("--api") or a == "--no-api" for a in extra) else ["--no-api"]
    cmd = [sys.executable, "-m", "ocs", "serve", "--data", str(data), "--listen", "127.0.0.1:0",
           "--origin-host", "ocs.test", "--origin-realm", "test", "--log-level", "INFO", *api, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("OCS ready") or not line:
            break
    if not line.startswith("OCS ready"):
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"server did not start: {line!r}\n{err.read_text()}")
    addresses = line.split()[2:]
    api = next((a.split("=", 1)[1] for a in addresses if a.startswith("api=")), "")
    first = next(a for a in addresses if "=" not in a)  # not workers=N, metrics=ADDR
    host, _, port = first.rpartition(":")
    return RunningServer(data, proc, host.strip("[]"), int(port), addresses, err, api)


@contextlib.asynccontextmanager
async def serving(data: Path, accounts: dict[str, dict], *flags: str):  # type: ignore[no-untyped-def]
    """Provision, start the server, connect one client; stop both after, asserting exit 0."""
    from ocs.client import DiameterClient
    provision(data, accounts)
    srv = start_server(data, *flags)
    try:
        client = await DiameterClient.connect(srv.host, srv.port)
        try:
            yield srv, client
        finally:
            await client.close()
    finally:
        assert srv.stop() == 0, srv.log()
