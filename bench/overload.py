"""`python -m bench.overload`: twice the closed-loop peak, open loop, with and without the wait bound.

Gateways time out in 1-3 s and retransmit, so a server that admits whatever its count bound
(max_in_flight) allows under overload fills with work nobody waits for. This runs, each on a
fresh server and data dir: a closed-loop run for the peak, then the peak x --factor offered on
a timetable (open loop: latency from each request's scheduled time) against the count bound only
(max_queue_ms = 0) and against the wait bound (max_queue_ms = --max-queue-ms). It prints, per
run, offered and accepted (2001) rates, the 3004 share, latency of the 2001 and of the 3004
answers, and the ratio of the two runs' p99; conservation of money is checked after each run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import client, servers
from bench.client import LoadSpec, RunResult
from bench.conservation import Conservation, check
from bench.provision import DEFAULT_TARIFF, balances, provision
from bench.report import markdown

SUCCESS, TOO_BUSY = 2001, 3004
BALANCE = 10**12  # micro-units per account: never the limit in a run


@dataclass(slots=True)
class Run:
    label: str
    max_queue_ms: int
    offered: float              # requests/s on the timetable (closed loop: what it achieved)
    result: RunResult
    conservation: Conservation
    server_exit: int
    log: str                    # the server's stderr

    def rate_of(self, code: int) -> float:
        h = self.result.by_code.get(code)
        return h.count / self.result.seconds if h is not None and self.result.seconds else 0.0

    def share_of(self, code: int) -> float:
        h = self.result.by_code.get(code)
        return h.count / self.result.answered if h is not None and self.result.answered else 0.0

    def p(self, code: int, q: float) -> float:
        """Latency percentile of the answers with this Result-Code, in ms (0 if none)."""
        h = self.result.by_code.get(code)
        return h.percentile(q) / 1000 if h is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "max_queue_ms": self.max_queue_ms, "offered": self.offered,
                "accepted_rps": round(self.rate_of(SUCCESS), 1),
                "too_busy_share": round(self.share_of(TOO_BUSY), 4),
                "p50_2001_ms": self.p(SUCCESS, 50), "p99_2001_ms": self.p(SUCCESS, 99),
                "p99_3004_ms": self.p(TOO_BUSY, 99), "conservation": self.conservation.to_dict(),
                "server_exit": self.server_exit, **self.result.to_dict()}


def one_run(workdir: Path, label: str, *, max_queue_ms: int, rate: float | None,
            duration: float, warmup: float = 1.0, connections: int = 16, in_flight: int = 4,
            accounts: int = 1000, timeout: float = 10.0, progress: bool = False,
            extra_config: str = "") -> Run:
    """A fresh data dir and `ocs serve` (max_queue_ms as given), one load run, stop, check money."""
    from rating.rater import rater_for
    from rating.tariff import load_tariff

    tag = "".join(c if c.isalnum() else "_" for c in label)
    data = workdir / f"data-{tag}"
    provision(data, accounts=accounts, balance=BALANCE, tariff_path=DEFAULT_TARIFF)
    cfg = workdir / f"{tag}.toml"
    cfg.write_text(f"max_queue_ms = {max_queue_ms}\ncdr_export = false\n{extra_config}")
    log_path = workdir / f"serve-{tag}.log"
    before = balances(data, accounts)
    server = servers.launch(label, servers.ocs_serve_argv(data, extra=["--config", str(cfg)]),
                            log_path=log_path)
    try:
        spec = LoadSpec(connections=connections, in_flight=in_flight, rate=rate,
                        duration=duration, warmup=warmup, timeout=timeout, accounts=accounts,
                        progress=progress, label=label)
        res = client.run(server.host, server.port, spec)
    finally:
        rc = servers.stop(server)
    cons = check(before, balances(data, accounts), res.usage,
                 rater_for(load_tariff(DEFAULT_TARIFF), 0))
    return Run(label, max_queue_ms, rate if rate is not None else res.throughput, res, cons, rc,
               log_path.read_text(errors="replace"))


def compare(workdir: Path, *, duration: float, peak_seconds: float, factor: float,
            max_queue_ms: list[int], connections: int = 16, peak_in_flight: int = 16,
            progress: bool = False) -> tuple[Run, list[Run]]:
    """(closed-loop peak run, [count bound only, wait bound per max_queue_ms]) at peak x factor. The peak is
    taken with peak_in_flight per connection: the engine's batches grow with the queue, so a
    shallow closed loop would understate what the server can do."""
    peak = one_run(workdir, "closed loop peak", max_queue_ms=0, rate=None, duration=peak_seconds,
                   warmup=min(1.0, peak_seconds / 3), connections=connections,
                   in_flight=peak_in_flight, progress=progress)
    rate = max(100.0, round(peak.result.throughput * factor))
    runs = [one_run(workdir, f"{label} @{rate:.0f}/s", max_queue_ms=mq, rate=rate,
                    duration=duration, connections=connections, progress=progress)
            for label, mq in [("count bound only", 0), *((f"max_queue_ms {m}", m) for m in max_queue_ms)]]
    return peak, runs


def table(peak: Run, runs: list[Run]) -> str:
    head = ["run", "offered/s", "2001/s", "3004 share", "2001 p50 ms", "2001 p99 ms",
            "3004 p99 ms", "timeouts", "conservation"]
    rows = [[peak.label, "closed loop", f"{peak.rate_of(SUCCESS):,.0f}",
             f"{peak.share_of(TOO_BUSY):.1%}", f"{peak.p(SUCCESS, 50):.1f}",
             f"{peak.p(SUCCESS, 99):.1f}", "-", str(peak.result.timeouts),
             "OK" if peak.conservation.ok else "MISMATCH"]]
    for r in runs:
        rows.append([r.label, f"{r.offered:,.0f}", f"{r.rate_of(SUCCESS):,.0f}",
                     f"{r.share_of(TOO_BUSY):.1%}", f"{r.p(SUCCESS, 50):.1f}",
                     f"{r.p(SUCCESS, 99):.1f}", f"{r.p(TOO_BUSY, 99):.1f}",
                     str(r.result.timeouts), "OK" if r.conservation.ok else "MISMATCH"])
    lines = [markdown(head, rows), ""]
    for r in runs[1:]:
        if r.p(SUCCESS, 99):
            lines.append(f"{r.label}: p99 of 2001 answers {runs[0].p(SUCCESS, 99) / r.p(SUCCESS, 99):.1f}x"
                         f" lower than the count bound's; 2001s "
                         f"{r.rate_of(SUCCESS) / max(1.0, runs[0].rate_of(SUCCESS)):.2f}x its rate")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", "-d", type=float, default=20.0, help="seconds of each overload run")
    p.add_argument("--peak-seconds", type=float, default=5.0, help="seconds of the closed-loop run")
    p.add_argument("--factor", type=float, default=2.0, help="offered = peak x this")
    p.add_argument("--max-queue-ms", default="50", metavar="MS[,MS...]",
                   help="the wait bound's setting; a list runs one server per value")
    p.add_argument("--connections", "-c", type=int, default=16)
    p.add_argument("--peak-in-flight", type=int, default=16,
                   help="closed-loop run: requests in flight per connection")
    p.add_argument("--json", type=Path, default=Path("ocs-overload.json"), help="result file")
    p.add_argument("--keep-data", action="store_true", help="keep the temp data dirs and logs")
    p.add_argument("--no-progress", action="store_true", help="no live line on stderr")
    args = p.parse_args(argv)
    if args.duration <= 1 or args.peak_seconds <= 1 or args.factor <= 0 \
            or args.connections < 1 or args.peak_in_flight < 1:
        print("bench: error: --duration and --peak-seconds must be > 1, --factor > 0, "
              "--connections and --peak-in-flight >= 1", file=sys.stderr)
        return 2
    try:
        targets = [int(x) for x in args.max_queue_ms.split(",")]
    except ValueError:
        targets = []
    if not targets or min(targets) < 1:
        print(f"bench: error: --max-queue-ms wants MS or MS,MS,... each >= 1, got "
              f"{args.max_queue_ms!r}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ocs-overload-"))
    try:
        peak, runs = compare(workdir, duration=args.duration, peak_seconds=args.peak_seconds,
                             factor=args.factor, max_queue_ms=targets,
                             connections=args.connections, peak_in_flight=args.peak_in_flight,
                             progress=not args.no_progress)
    except (servers.ServerError, ConnectionError, OSError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep_data:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(peak, runs))
    args.json.write_text(json.dumps({"argv": sys.argv, "peak": peak.to_dict(),
                                     "runs": [r.to_dict() for r in runs]}, indent=1))
    print(f"\nresults: {args.json}")
    bad = [r.label for r in [peak, *runs] if not r.conservation.ok or r.server_exit != 0]
    if bad:
        print(f"conservation or server exit FAILED for: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
