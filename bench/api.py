"""`python -m bench.api`: the HTTP API's throughput and latency, and what it costs charging.

One fresh data dir and `ocs serve --api` (durable commits), then, each for --duration seconds:
1. GET /healthz: the HTTP stack alone (no engine call), the baseline the other rates are put
   against;
2. GET /v1/accounts/{id}/balance, authenticated (the key and its role are checked by the engine
   in each command's transaction);
3. POST /v1/accounts/{id}/topups, each with a new Idempotency-Key (durable before the 201);
4. CCR-U: the closed-loop peak, then 50% of that peak on a timetable, alone and with 500 API
   top-ups/s beside it (from another process, started before the runs) in turn, --pairs times
   and alone once more; the ratio is of the median p99 beside to the median p99 alone (the
   machine is shared: one pair alone can be off by 2x either way).
The top-ups go to accounts the CCRs never touch: their balances after the run must be their
balances before plus every acknowledged top-up, exactly (checked, printed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import client, http_load, servers
from bench.client import LoadSpec
from bench.provision import DEFAULT_TARIFF, balances, provision
from bench.report import markdown
from bench.workload import account_id

TOPUP = "0.01"
TOPUP_MICROS = 10_000
BALANCE = 10**12


def _run(coro: Any) -> Any:
    import uvloop
    return uvloop.run(coro)


def _topups(key: str, first: int, count: int, run_id: str) -> http_load.Request:
    body = json.dumps({"amount": TOPUP}).encode()

    def make(n: int) -> bytes:
        return http_load.request("POST", f"/v1/accounts/{account_id(first + n % count)}/topups",
                                 {"Authorization": f"Bearer {key}",
                                  "Idempotency-Key": f"bench-{run_id}-{n}"}, body)
    return make


def _beside(kind: str, key: str, first: int, count: int) -> http_load.Request:
    if kind == "topups":
        return _topups(key, first, count, "beside-" + secrets.token_hex(4))
    if kind == "balance":
        return lambda i: http_load.request("GET", f"/v1/accounts/{account_id(first + i % count)}"
                                                  "/balance", {"Authorization": f"Bearer {key}"})
    return lambda _i: http_load.request("GET", "/healthz", {})


def _writer(api: str, key: str, first: int, count: int, rate: float, kind: str,
            todo: Any, out: Any) -> None:
    """The API requests beside charging, in a process of its own (spawned once, before the
    runs, so its start-up is not in any run): one timetable of `rate`/s per duration read from
    `todo`, until None."""
    host, port = api.rsplit(":", 1)
    out.put("ready")
    while (duration := todo.get()) is not None:  # each run: new idempotency keys
        res = _run(http_load.run(host, int(port), _beside(kind, key, first, count),
                                 label="writer", connections=32, duration=duration, rate=rate))
        out.put({"ok": res.ok, "sent": res.sent, "rate": res.rate, "p99_ms": res.p(99),
                 "status": {str(k): v for k, v in res.status.items()}, "errors": res.errors})


def _row(res: http_load.HttpResult, base: float) -> list[str]:
    return [res.label, f"{res.rate:,.0f}", f"{res.rate / base:.2f}" if base else "-",
            f"{res.p(50):.1f}", f"{res.p(99):.1f}",
            ", ".join(f"{s}: {n}" for s, n in sorted(res.status.items())), str(res.errors)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", "-d", type=float, default=8.0, help="seconds of each run")
    p.add_argument("--connections", "-c", type=int, default=16, help="HTTP connections")
    p.add_argument("--accounts", type=int, default=1000, help="accounts charged by the CCRs "
                                                               "(as many again get the top-ups)")
    p.add_argument("--writes", type=float, default=500.0, help="API top-ups/s beside charging")
    p.add_argument("--beside", choices=("topups", "balance", "healthz"), default="topups",
                   help="what the API requests beside charging are (balance, healthz: to see "
                        "which part of a top-up's cost charging feels)")
    p.add_argument("--pairs", type=int, default=3, help="runs beside API requests, each between "
                                                        "two runs alone")
    p.add_argument("--json", type=Path, default=Path("ocs-api-bench.json"))
    args = p.parse_args(argv)
    if args.duration < 2 or min(args.connections, args.accounts, args.pairs) < 1 \
            or args.writes <= 0:
        print("bench: error: --duration >= 2, --connections, --accounts, --pairs >= 1, --writes > 0",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ocs-api-bench-"))
    n = args.accounts
    try:
        data = work / "data"
        provision(data, accounts=2 * n, balance=BALANCE, tariff_path=DEFAULT_TARIFF)
        (work / "serve.toml").write_text("cdr_export = false\napi_rate_limit = 0\n")
        server = servers.launch("ocs", servers.ocs_serve_argv(
            data, extra=["--api", "127.0.0.1:0", "--config", str(work / "serve.toml")]),
            log_path=work / "serve.log")
        try:
            return _measure(args, work, data, server, n)
        finally:
            rc = servers.stop(server)
            if rc != 0:
                print(f"the server exited {rc}; its log: {work / 'serve.log'}", file=sys.stderr)
    except (servers.ServerError, ConnectionError, OSError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path, data: Path, server: servers.Launched,
             n: int) -> int:
    made = subprocess.run([sys.executable, "-m", "ocs", "apikey", "create", "--name", "bench",
                           "--role", "admin", "--data", str(data)],
                          capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        raise OSError(f"apikey create: {made.stderr.strip()}")
    key = made.stdout.strip().splitlines()[-1]
    host, port = server.api.rsplit(":", 1)
    auth = {"Authorization": f"Bearer {key}"}
    d, c = args.duration, args.connections
    before = sum(balances(data, 2 * n)[n:])

    health = _run(http_load.run(host, int(port), lambda _n: http_load.request("GET", "/healthz", {}),
                                label="GET /healthz (baseline)", connections=c, duration=d))
    reads = _run(http_load.run(
        host, int(port), lambda i: http_load.request(
            "GET", f"/v1/accounts/{account_id(n + i % n)}/balance", auth),
        label="GET balance", connections=c, duration=d))
    writes = _run(http_load.run(host, int(port), _topups(key, n, n, secrets.token_hex(4)),
                                label="POST topups", connections=c, duration=d))

    def ccr_run(label: str, rate: float | None, in_flight: int) -> Any:
        return client.run(server.host, server.port, LoadSpec(
            connections=16, in_flight=in_flight, rate=rate, duration=d, warmup=1.0, label=label,
            accounts=n, progress=False, timeout=10.0))

    peak = ccr_run("peak", None, 16)
    half = round(peak.throughput * 0.5)

    ctx = mp.get_context("spawn")
    todo, out = ctx.Queue(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(server.api, key, n, n, args.writes, args.beside,
                                               todo, out))
    writer.start()
    alone: list[Any] = []
    beside: list[Any] = []
    sides: list[dict[str, Any]] = []
    try:
        if out.get(timeout=120) != "ready":
            raise OSError("the API writer did not start")
        for i in range(args.pairs):  # alone, beside, alone, beside, ..., alone
            alone.append(ccr_run(f"alone {i + 1}", half, 4))
            todo.put(d + 0.5)  # covers the CCR run (whose first second is its warm-up)
            beside.append(ccr_run(f"beside {i + 1}", half, 4))
            sides.append(out.get(timeout=d + 60))
        alone.append(ccr_run(f"alone {args.pairs + 1}", half, 4))
    finally:
        todo.put(None)
        writer.join(30)
        if writer.is_alive():
            writer.kill()

    after = sum(balances(data, 2 * n)[n:])
    acked = writes.status.get(201, 0) + (sum(x["status"].get("201", 0) for x in sides)
                                         if args.beside == "topups" else 0)
    exact = after - before == acked * TOPUP_MICROS

    base = health.rate
    print(f"OCS API on this machine, {c} connections, {d:.0f} s per run, durable commits\n")
    print(markdown(["run", "ok/s", "x baseline", "p50 ms", "p99 ms", "status", "conn errors"],
                 [_row(r, base) for r in (health, reads, writes)]))
    def p99(r: Any) -> float:
        return float(r.histogram.percentile(99)) / 1000

    ratio = statistics.median(p99(r) for r in beside) / statistics.median(p99(r) for r in alone)
    runs = [r for pair in zip(alone, beside, strict=False) for r in pair] + [alone[-1]]
    print(f"\nCCR-U: closed-loop peak {peak.throughput:,.0f}/s; at 50% ({half}/s on a timetable), "
          f"alone and beside {args.writes:,.0f} API {args.beside}/s in turn:")
    print(markdown(["run", "CCR/s", "p50 ms", "p99 ms", "timeouts"],
                 [[r.label, f"{r.throughput:,.0f}", f"{r.histogram.percentile(50) / 1000:.1f}",
                   f"{p99(r):.1f}", str(r.timeouts)] for r in runs]))
    print(f"API {args.beside} beside: " + "; ".join(
        f"{x['rate']:,.0f}/s answered, p99 {x['p99_ms']:.1f} ms" for x in sides))
    print(f"CCR-U p99 beside API {args.beside} / alone (median of each): {ratio:.2f}x")
    print(f"top-ups: {acked:,} acknowledged; the accounts' balances moved by exactly that: "
          f"{'yes' if exact else 'NO'}")
    args.json.write_text(json.dumps({
        "argv": sys.argv, "connections": c, "duration": d,
        "http": {r.label: {"ok_per_s": round(r.rate, 1), "p50_ms": r.p(50), "p99_ms": r.p(99),
                           "status": dict(r.status), "errors": r.errors}
                 for r in (health, reads, writes)},
        "ccr_peak": round(peak.throughput, 1), "ccr_rate": half,
        "ccr_p99_ms": {r.label: p99(r) for r in runs}, "ccr_p99_ratio": round(ratio, 3),
        "writer": sides,
        "topups_acknowledged": acked, "balances_exact": exact}, indent=1))
    print(f"\nresults: {args.json}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
