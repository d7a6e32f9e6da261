"""`ocs bench` / `python -m bench.loadgen`: drive an OCS with Gy traffic and report what it did.

Modes:
- default: start `ocs serve` on a temp data dir (or target --host/--port), provision accounts and
  the tariff, run the load, stop the server by pid, check conservation of money;
- --host/--port: drive a running server; its accounts are assumed to exist. With --data (its data
  dir) the run checks they do and checks conservation; --provision writes the bench tariff and
  accounts there first. Without --provision the bench never writes into a --data dir: it refuses,
  naming what is missing;
- --compare: the same client and messages, one after another, against the echo ceiling, the
  python-diameter peer, ours durable and ours --no-sync, then ours at 80 % of its measured peak
  in open loop for latency; one table;
- --workers 1,2: one run of ours per worker count (scale-up).
Every run writes into the JSON result file and the PNG chart.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import client, report, servers
from bench.client import LoadSpec, RunResult
from bench.conservation import check
from bench.provision import DEFAULT_TARIFF, account_range, balances, missing, provision
from bench.report import Row
from bench.workload import Mix

TARGETS = {"durable_rps": 15_000, "x_ceiling": 0.2, "x_peer": 10.0, "p99_at_80_ms": 10.0}


class BenchError(Exception):
    """A bad option or a failed step, in one line."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    g.add_argument("--host", help="target a running server instead of starting one")
    g.add_argument("--port", type=int, help="with --host")
    g.add_argument("--data", metavar="DIR",
                   help="data dir: of the server we start (default: a temp dir, removed after), or "
                        "of the --host server, to provision accounts and check conservation")
    g.add_argument("--provision", action="store_true",
                   help="write the bench tariff and the --accounts accounts (--balance each, plan "
                        "default) into --data first; without it the bench never writes there and "
                        "refuses when they are missing (temp data dirs are always provisioned)")
    g.add_argument("--keep-data", action="store_true", help="keep the temp data dirs")
    g.add_argument("--no-sync", action="store_true", help="ours without durable commits")
    g.add_argument("--workers", default="1", metavar="N[,N...]",
                   help="ocs serve --workers; a list (1,2) runs a scale-up sweep")
    g.add_argument("--compare", action="store_true",
                   help="echo ceiling, python-diameter peer, ours durable, ours --no-sync, and a "
                        "latency run at 80%% of our peak")
    g = p.add_argument_group("load")
    g.add_argument("--connections", "-c", type=int, default=16)
    g.add_argument("--in-flight", "-w", type=int, default=4,
                   help="closed loop: requests in flight per connection (default 4)")
    g.add_argument("--rate", type=float, help="open loop: offered requests/s on a timetable")
    g.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per run")
    g.add_argument("--warmup", type=float, default=1.0, help="seconds left out of the figures")
    g.add_argument("--requests", type=int, help="stop after this many requests")
    g.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    g.add_argument("--accounts", type=int, default=1000)
    g.add_argument("--balance", default="1000000", help="initial balance per account")
    g.add_argument("--tariff", type=Path, default=DEFAULT_TARIFF)
    g.add_argument("--mix", default="", help="e.g. data=0.6,voice=0.25,sms=0.15,data_updates=4")
    g.add_argument("--seed", type=int, default=1)
    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, default=Path("ocs-bench.json"), help="result file")
    g.add_argument("--chart", type=Path, default=Path("ocs-bench.png"), help="PNG chart")
    g.add_argument("--no-progress", action="store_true", help="no live line on stderr")


def _spec(args: argparse.Namespace, label: str, rate: float | None = None) -> LoadSpec:
    try:
        mix = Mix.parse(args.mix) if args.mix else Mix()
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    return LoadSpec(connections=args.connections, in_flight=args.in_flight,
                    rate=rate if rate is not None else args.rate, duration=args.duration,
                    warmup=args.warmup, max_requests=args.requests, timeout=args.timeout,
                    accounts=args.accounts, mix=mix, seed=args.seed,
                    progress=not args.no_progress, label=label)


def _validate(args: argparse.Namespace) -> list[int]:
    if (args.host is None) != (args.port is None):
        raise BenchError("--host and --port go together")
    if args.host and args.compare:
        raise BenchError("--compare starts its own servers; drop --host/--port")
    if args.provision and not args.data:
        raise BenchError("--provision writes into --data DIR; give the data dir to provision"
                         + (" (that of the --host server)" if args.host else ""))
    for name in ("connections", "in_flight", "accounts"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be >= 1")
    if args.connections > 9999:
        raise BenchError("--connections must be <= 9999")
    if args.duration <= 0 or args.timeout <= 0 or args.warmup < 0:
        raise BenchError("--duration and --timeout must be > 0, --warmup >= 0")
    if args.warmup >= args.duration:
        raise BenchError("--warmup must be shorter than --duration")
    if args.rate is not None and args.rate <= 0:
        raise BenchError("--rate must be > 0")
    if not args.tariff.is_file():
        raise BenchError(f"tariff file not found: {args.tariff}")
    try:
        workers = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"--workers wants N or N,N,...: {args.workers!r}") from None
    if not workers or min(workers) < 1:
        raise BenchError("--workers values must be >= 1")
    try:
        from balance.money import to_micro
        if to_micro(args.balance) <= 0:
            raise BenchError("--balance must be > 0")
    except ValueError as exc:
        raise BenchError(f"--balance: {exc}") from None
    return workers


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _drive(host: str, port: int, spec: LoadSpec) -> tuple[RunResult, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    res = client.run(host, port, spec)
    cpu = (time.process_time() - cpu0) / max(1e-9, time.perf_counter() - wall0)
    return res, cpu


def _row(name: str, res: RunResult, cpu: float, **extra: object) -> Row:
    _log(report.summary(res) + f"; client CPU {cpu:.0%} of a core")
    return Row(name, res, {"client_cpu": round(cpu, 3), **extra})


class _DataDirs:
    """Temp data dirs made for runs of ours; removed at the end unless --keep-data."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.made: list[str] = []

    def owned(self, path: str) -> bool:
        """A dir the bench made for itself (temp, or a --compare run's own under --data): it may
        provision it. The --data dir itself is the operator's."""
        return path in self.made or (self.args.compare and path != self.args.data)

    def new(self, tag: str) -> str:
        if self.args.data:
            path = os.path.join(self.args.data, tag) if self.args.compare or tag != "ours" \
                else self.args.data
            os.makedirs(path, exist_ok=True)
            return path
        path = tempfile.mkdtemp(prefix=f"ocs-bench-{tag}-")
        self.made.append(path)
        return path

    def cleanup(self) -> None:
        if self.args.keep_data:
            for p in self.made:
                _log(f"kept data dir {p}")
            return
        for p in self.made:
            shutil.rmtree(p, ignore_errors=True)


def run_ours(args: argparse.Namespace, dirs: _DataDirs, *, label: str, no_sync: bool,
             workers: int, rate: float | None = None, log_dir: Path | None = None) -> Row:
    """Provision a data dir, start `ocs serve`, drive it, stop it, check conservation."""
    from balance.money import to_micro
    from rating.rater import rater_for
    from rating.tariff import load_tariff

    data = dirs.new("nosync" if no_sync else f"sync-w{workers}" if args.compare else "ours")
    if dirs.owned(data) or args.provision:
        _log(f"[{label}] provisioning {args.accounts} accounts in {data}")
        provision(data, accounts=args.accounts, balance=to_micro(args.balance),
                  tariff_path=args.tariff)
    before = balances(data, args.accounts)
    log_path = (log_dir or Path(data)) / f"serve-{re.sub(r'[^A-Za-z0-9.-]+', '_', label)}.log"
    server = servers.launch(label, servers.ocs_serve_argv(data, no_sync=no_sync, workers=workers),
                            log_path=log_path)
    try:
        res, cpu = _drive(server.host, server.port, _spec(args, label, rate))
    finally:
        rc = servers.stop(server)
    after = balances(data, args.accounts)
    cons = check(before, after, res.usage, rater_for(load_tariff(args.tariff), 0))
    _log(f"[{label}] {cons.describe()}; server exit code {rc}")
    return _row(label, res, cpu, conservation=cons.to_dict(), server_exit=rc, workers=workers,
                no_sync=no_sync, data_dir=data)


def run_external(args: argparse.Namespace) -> Row:
    from balance.money import to_micro
    from rating.rater import rater_for
    from rating.tariff import load_tariff

    before = None
    if args.data:
        if args.provision:
            _log(f"provisioning {args.accounts} accounts in {args.data}")
            provision(args.data, accounts=args.accounts, balance=to_micro(args.balance),
                      tariff_path=args.tariff)
        before = balances(args.data, args.accounts)
    else:
        _log(f"no --data: accounts {account_range(args.accounts)} are assumed to exist; "
             "conservation is not checked")
    label = f"{args.host}:{args.port}"
    res, cpu = _drive(args.host, args.port, _spec(args, label))
    extra: dict[str, object] = {}
    if before is not None:
        time.sleep(0.2)   # answers are sent after the durable commit; this is only for --no-sync
        cons = check(before, balances(args.data, args.accounts), res.usage,
                     rater_for(load_tariff(args.tariff), 0))
        _log(f"[{label}] {cons.describe()}")
        extra["conservation"] = cons.to_dict()
    return _row(label, res, cpu, **extra)


def run_plain(args: argparse.Namespace, label: str, argv: list[str]) -> Row:
    server = servers.launch(label, argv)
    try:
        res, cpu = _drive(server.host, server.port, _spec(args, label))
    finally:
        rc = servers.stop(server)
    return _row(label, res, cpu, server_exit=rc)


def compare(args: argparse.Namespace, dirs: _DataDirs, workers: list[int]) -> list[Row]:
    rows = [run_plain(args, "echo ceiling", servers.echo_argv()),
            run_plain(args, "python-diameter peer",
                      servers.peer_argv(accounts=args.accounts, balance=args.balance,
                                        tariff=args.tariff,
                                        clients=max(256, args.connections))),
            run_ours(args, dirs, label="ours durable", no_sync=False, workers=workers[0]),
            run_ours(args, dirs, label="ours --no-sync", no_sync=True, workers=workers[0])]
    for n in workers[1:]:
        rows.append(run_ours(args, dirs, label=f"ours durable, {n} workers", no_sync=False,
                             workers=n))
    peak = rows[2].result.throughput
    if peak > 0:
        rate = round(peak * 0.8)
        rows.append(run_ours(args, dirs, label=f"ours durable @80% ({rate}/s open loop)",
                             no_sync=False, workers=workers[0], rate=rate))
    return rows


def verdicts(rows: list[Row]) -> list[str]:
    """The brief's targets against this run's figures (informative; the lead re-runs quietly)."""
    by = {r.name: r for r in rows}
    ours, echo = by.get("ours durable"), by.get("echo ceiling")
    peer = by.get("python-diameter peer")
    at80 = next((r for r in rows if "@80%" in r.name), None)
    out = []
    if ours:
        t = ours.result.throughput
        out.append(f"ours durable {t:,.0f} req/s (target >= {TARGETS['durable_rps']:,})")
        if echo and echo.result.throughput:
            out.append(f"x ceiling {t / echo.result.throughput:.2f} "
                       f"(target >= {TARGETS['x_ceiling']})")
        if peer and peer.result.throughput:
            out.append(f"x peer {t / peer.result.throughput:.1f} (target >= {TARGETS['x_peer']})")
    if at80:
        p99 = at80.result.histogram.percentile(99) / 1000
        out.append(f"p99 at 80% of peak {p99:.2f} ms (target <= {TARGETS['p99_at_80_ms']})")
    return out


def require_provisioned(args: argparse.Namespace) -> None:
    """Refuse (one line) a run on the operator's --data dir that lacks what the run needs, unless
    --provision was given: the bench never writes there unasked."""
    if not args.data or args.compare or args.provision:
        return
    import lmdb

    try:
        lacks = missing(args.data, accounts=args.accounts, tariff_path=args.tariff)
    except (lmdb.Error, OSError) as exc:
        raise BenchError(f"--data {args.data}: cannot read it: {exc}") from None
    if lacks:
        raise BenchError(f"--data {args.data} lacks {'; '.join(lacks)}: pass --provision to write "
                         "the bench tariff and accounts there")


def execute(args: argparse.Namespace) -> int:
    workers = _validate(args)
    require_provisioned(args)
    dirs = _DataDirs(args)
    started = time.time()
    try:
        if args.compare:
            rows = compare(args, dirs, workers)
        elif args.host:
            rows = [run_external(args)]
        else:
            rows = [run_ours(args, dirs, no_sync=args.no_sync, workers=n,
                             label=f"ours{' --no-sync' if args.no_sync else ' durable'}"
                                   f"{f', {n} workers' if len(workers) > 1 or n > 1 else ''}")
                    for n in workers]
    except (servers.ServerError, ConnectionError, OSError) as exc:
        raise BenchError(str(exc)) from None
    finally:
        dirs.cleanup()
    print()
    print(report.table(rows, ceiling="echo ceiling" if args.compare else None,
                       peer="python-diameter peer" if args.compare else None))
    if len(workers) > 1:
        sweep = [r for r in rows if "workers" in r.extra and not r.extra.get("no_sync")
                 and "@80%" not in r.name]
        base = sweep[0].result.throughput if sweep else 0
        print("\nscale-up (durable): " + ", ".join(
            f"{r.extra['workers']} worker(s) {r.result.throughput:,.0f} req/s"
            + (f" (x{r.result.throughput / base:.2f})" if base else "") for r in sweep))
    for line in verdicts(rows):
        print("  " + line)
    bad_cons = [r.name for r in rows
                if r.extra.get("conservation") and not r.extra["conservation"]["ok"]]
    payload = {"started": started, "argv": sys.argv, "cpu": _cpu_model(),
               "runs": [{"name": r.name, **r.extra, **r.result.to_dict()} for r in rows],
               "targets": verdicts(rows)}
    report.write_json(args.json, payload)
    report.write_chart(args.chart, rows)
    print(f"\nresults: {args.json}  chart: {args.chart}")
    if bad_cons:
        print(f"conservation FAILED for: {', '.join(bad_cons)}", file=sys.stderr)
        return 1
    if any(r.result.answered == 0 for r in rows):
        print("a run had no answered requests", file=sys.stderr)
        return 1
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return execute(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BenchError", "add_arguments", "execute", "main"]
