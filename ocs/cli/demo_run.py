"""`ocs demo`: the whole job on a fresh machine, in one command.

Steps, each checked (the demo exits non-zero at the first that fails): a fresh data dir (./ocs-demo,
marked as the demo's own so a re-run may wipe it, and never a dir that is not), the example tariff
shipped in the package, N subscribers in batched transactions (every 10th postpaid), `ocs serve`
started and stopped by pid, mixed Gy traffic for S seconds from the bench client with a live line,
then the back office through its own commands when they exist (`ocs cdr export`, `ocs reconcile`,
`ocs invoice`) and a summary read from the store.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

EXAMPLE_TARIFF = Path(__file__).parents[1] / "data" / "example-tariff.toml"
MARKER = ".ocs-demo"
SERVICE_NAMES = {100: "voice", 200: "data", 300: "SMS"}


class DemoError(Exception):
    """A step failed; the message names it."""


@dataclass
class DemoOptions:
    dir: Path = Path("ocs-demo")
    subscribers: int = 10_000
    seconds: float = 20.0
    connections: int = 8
    in_flight: int = 4
    balance: str = "50"
    progress: bool = True


@dataclass
class DemoResult:
    requests: int = 0
    throughput: float = 0.0
    latency_us: dict[str, float | int] = field(default_factory=dict)  # Histogram.summary()
    revenue: dict[str, int] = field(default_factory=dict)     # service -> micro-units
    currency: str = "EUR"
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def say(msg: str) -> None:
    print(msg, flush=True)


def fresh_dir(path: Path) -> None:
    """Create path for the demo; wipe it only when an earlier demo made it."""
    if path.exists():
        if not (path / MARKER).exists():
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            else:
                raise DemoError(f"{path} exists and was not made by ocs demo; "
                                "remove it or pass --dir")
        else:
            shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by `ocs demo`; a re-run deletes this directory\n")


def available_commands() -> set[str]:
    from ocs.cli import command_names

    return command_names()


def ocs_command(argv: list[str], what: str, timeout: float = 300) -> str:
    """Run `ocs ARGV` as a child process; raise DemoError naming `what` if it fails."""
    try:
        proc = subprocess.run([sys.executable, "-m", "ocs", *argv], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DemoError(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DemoError(f"{what} failed (exit {proc.returncode}): " + " / ".join(detail))
    return proc.stdout


def revenue_by_service(data: Path) -> tuple[dict[str, int], str, int]:
    """Money debited per service from the stored CDRs: (by service, currency, CDR count)."""
    from balance.store import open_store
    from ocs.billing import cdr as cdrmod

    by: dict[str, int] = defaultdict(int)
    currency, count = "EUR", 0
    store = open_store(data)
    try:
        with store.read() as view:
            for rec in cdrmod.iter_from(view.txn, store.db("cdrs")):
                by[SERVICE_NAMES.get(rec.rating_group, f"rating group {rec.rating_group}")] += \
                    rec.amount
                currency = rec.currency
                count += 1
    finally:
        store.close()
    return dict(by), currency, count


def run_demo(opts: DemoOptions) -> DemoResult:
    from balance.money import to_micro
    from bench import client, servers
    from bench.client import LoadSpec
    from bench.provision import provision

    out = DemoResult()
    data = opts.dir.resolve()
    t0 = time.monotonic()
    fresh_dir(data)
    say(f"1/7 data dir {data}")

    say(f"2/7 loading the example tariff and provisioning {opts.subscribers:,} subscribers")

    def progress(done: int, total: int) -> None:
        if opts.progress:
            sys.stdout.write(f"\r    {done:,}/{total:,} accounts")
            sys.stdout.flush()

    provision(data, accounts=opts.subscribers, balance=to_micro(opts.balance),
              tariff_path=EXAMPLE_TARIFF, postpaid_every=10, progress=progress)
    if opts.progress:
        sys.stdout.write("\n")

    say("3/7 starting ocs serve")
    log = data / "serve.log"
    server = servers.launch("ocs serve", servers.ocs_serve_argv(data, extra=["--api", "127.0.0.1:0"]),
                            log_path=log)
    say(f"    listening on {server.host}:{server.port} (pid {server.pid}, log {log})")
    if server.api:
        show_api(data, server.api)
    say(f"4/7 {opts.seconds:g} s of mixed traffic (data, voice, SMS) over "
        f"{opts.connections} connections")
    try:
        spec = LoadSpec(connections=opts.connections, in_flight=opts.in_flight,
                        duration=opts.seconds, warmup=0.0, accounts=opts.subscribers,
                        progress=opts.progress, label="demo", timeout=5.0)
        res = client.run(server.host, server.port, spec)
    finally:
        say("5/7 stopping the server")
        rc = servers.stop(server)
    if rc != 0:
        raise DemoError(f"ocs serve exited with code {rc}; see {log}")
    if res.answered == 0:
        raise DemoError(f"no request was answered; see {log}")
    out.requests = res.answered
    out.throughput = res.throughput
    out.latency_us = res.histogram.summary()

    say("6/7 back office")
    commands = available_commands()
    cdr_dir = data / "cdr"
    if "cdr" in commands:
        # the server wrote every CDR to DATA/cdr/ (consumer server-files); a downstream system is
        # one more consumer with its own files, kept apart so reconcile and invoice see each CDR once
        exports = data / "exports"
        exports.mkdir(exist_ok=True)
        target = exports / f"billing-{datetime.now(UTC):%Y%m%dT%H%M%S}.csv"
        said = ocs_command(["cdr", "export", "--consumer", "billing", "--out", str(target),
                            "--data", str(data)], "ocs cdr export")
        out.files["CDRs"] = str(cdr_dir)
        if target.exists():
            out.files["billing export"] = str(target)
        say(f"    ocs cdr export: {said.strip()}; the server's own files are under {cdr_dir}")
    else:
        out.skipped.append("ocs cdr export (command not available)")
    if "reconcile" in commands:
        argv = ["reconcile", "--data", str(data)]
        if cdr_dir.is_dir():
            argv += ["--cdrs", str(cdr_dir)]
        ocs_command(argv, "ocs reconcile")
        say("    ocs reconcile: no discrepancy")
    else:
        out.skipped.append("ocs reconcile (command not available)")
    if "invoice" in commands:
        inv = data / "invoices"
        period = f"{datetime.now(UTC):%Y-%m}"
        ocs_command(["invoice", "--cdrs", str(cdr_dir), "--period", period, "--out", str(inv),
                     "--data", str(data)], "ocs invoice", timeout=600)
        out.files["invoices"] = str(inv)
        say(f"    ocs invoice: invoices for {period} in {inv}")
    else:
        out.skipped.append("ocs invoice (command not available)")
    for note in out.skipped:
        say(f"    skipped: {note}")

    out.revenue, out.currency, cdrs = revenue_by_service(data)
    out.files["data"] = str(data)
    out.files["server log"] = str(log)
    say(f"7/7 done in {time.monotonic() - t0:.0f} s ({cdrs:,} CDRs)")
    return out


def show_api(data: Path, api: str) -> None:
    """Make a readonly API key (through the running engine), read one balance over HTTP with it,
    and print the line that does the same, to paste while the server runs."""
    import json
    import urllib.request
    said = ocs_command(["apikey", "create", "--name", f"demo-{int(time.time())}", "--role",
                        "readonly", "--data", str(data)], "ocs apikey create")
    key = said.strip().splitlines()[-1]
    from bench.workload import account_id
    url = f"http://{api}/v1/accounts/{account_id(0)}/balance"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # 127.0.0.1 only
        doc = json.loads(resp.read())
    say(f"    HTTP API on http://{api} (readonly key made for the demo); while it runs:")
    say(f"      curl -s -H 'Authorization: Bearer {key}' {url}")
    say(f"      -> balance {doc['balance']} {doc['currency']}")


def format_summary(r: DemoResult) -> str:
    from balance.money import format_micro

    lat = r.latency_us
    lines = ["", "Summary",
             f"  requests served   {r.requests:,} ({r.throughput:,.0f}/s)",
             "  latency (ms)      " + "  ".join(
                 f"{k.replace('_', '.')} {lat.get(k, 0) / 1000:.2f}"
                 for k in ("p50", "p90", "p99", "p99_9", "max")),
             f"  revenue ({r.currency})"]
    total = 0
    for service, amount in sorted(r.revenue.items()):
        lines.append(f"    {service:<14}  {format_micro(amount, 2):>12}")
        total += amount
    lines.append(f"    {'total':<14}  {format_micro(total, 2):>12}")
    for name, path in r.files.items():
        lines.append(f"  {name:<16}  {path}")
    return "\n".join(lines)


def main_demo(opts: DemoOptions) -> int:
    from bench.servers import ServerError

    try:
        result = run_demo(opts)
    except (DemoError, ServerError, ConnectionError, OSError) as exc:
        print(f"ocs demo: failed: {exc}", file=sys.stderr)
        return 1
    say(format_summary(result))
    return 0


__all__ = ["DemoError", "DemoOptions", "DemoResult", "format_summary", "main_demo", "run_demo"]
