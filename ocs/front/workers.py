"""`ocs serve --workers N`: N processes accepting on the same port (SO_REUSEPORT), one LMDB env.

Each worker is a whole server with its own group-commit writer; LMDB serialises their write
transactions (also across processes), so a debit is as exact with N workers as with one. The
kernel spreads new connections over the workers; a connection stays with the worker that took it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ocs.config import ConfigError, ServeConfig, join_hostport, split_hostport

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnProcess


def _reserve_ports(listen: list[str]) -> tuple[list[str], list[socket.socket]]:
    """Turn port 0 into a concrete port all workers can share; hold it until they are up."""
    out, held = [], []
    for addr in listen:
        host, port = split_hostport(addr, "listen")
        if port == 0:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, 0))
            held.append(s)
            port = s.getsockname()[1]
        out.append(join_hostport(host, port))
    return out, held


def worker_metrics(metrics: str | None, workers: int) -> list[str]:
    """Worker i serves its own metrics and probes on PORT+i: counters are per process, and a
    scrape (or a readiness probe) must land on the same worker each time, so the workers cannot
    share one port. Prometheus scrapes them as N targets; port 0 gives each a free port."""
    if not metrics:
        return []
    host, port = split_hostport(metrics, "metrics")
    if port and port + workers - 1 > 65535:
        raise ConfigError(f"metrics {metrics}: --workers {workers} needs ports {port}..{port + workers - 1}"
                          " (worker i serves on PORT+i)")
    return [join_hostport(host, port + i if port else 0) for i in range(workers)]


Serve = Callable[..., int]  # ocs.front.server.run: (cfg, on_ready=(addresses, metrics) -> None) -> rc


Ready = tuple[list[str], str]  # a worker's Diameter addresses and metrics address, once it serves


def _worker(cfg: ServeConfig, ready: Connection[Ready, Any], parent_pid: int, run: Serve) -> None:
    from ocs.lifeline import die_with_parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM; ^C goes to it
    die_with_parent(parent_pid)  # SIGTERM (a graceful stop) if the supervisor is killed
    try:
        code = run(cfg, on_ready=lambda addrs, metrics_at: ready.send((addrs, metrics_at)))
    except OSError as exc:  # a port taken since the check, a store it cannot open: one line, no traceback
        print(f"ocs: error: worker {mp.current_process().name}: {exc}", file=sys.stderr, flush=True)
        code = 2
    sys.exit(code)


def run_workers(cfg: ServeConfig, run: Serve, start_timeout: float = 60.0) -> int:
    """Supervise cfg.workers processes, each running `run` (the one-process server, passed in so
    this module does not import the server that imports it; a module-level function pickles by
    name for the spawned child)."""
    listen, held = _reserve_ports(cfg.listen)
    child_cfg = dataclasses.replace(cfg, workers=1, reuse_port=True, listen=listen)
    metrics_at = worker_metrics(cfg.metrics, cfg.workers)
    ctx = mp.get_context("spawn")
    procs: list[SpawnProcess] = []
    pipes = []
    stopping = False

    def stop(*_a: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)  # before spawning: a SIGTERM now must reach every child
    signal.signal(signal.SIGINT, stop)
    for i in range(cfg.workers):
        parent_end, child_end = ctx.Pipe(duplex=False)
        own = dataclasses.replace(child_cfg, metrics=metrics_at[i]) if cfg.metrics else child_cfg
        p = ctx.Process(target=_worker, args=(own, child_end, os.getpid(), run), name=f"ocs-worker-{i}")
        p.start()
        procs.append(p)
        pipes.append(parent_end)
    addresses: list[str] = []
    served: list[str] = []  # each worker's metrics address, as it bound it (port 0 resolved)
    deadline = time.monotonic() + start_timeout

    def failed() -> int:
        stop()
        for q in procs:
            q.join(10)
            if q.is_alive():
                q.kill()
        print("ocs: error: a worker failed to start", file=sys.stderr)
        return 2 if any(q.exitcode == 2 for q in procs) else 1

    for pipe, p in zip(pipes, procs, strict=True):
        while not pipe.poll(0.2):
            if not p.is_alive() or time.monotonic() > deadline or stopping:
                return failed()
        try:
            addresses, bound = pipe.recv()
        except EOFError:  # the worker exited before it was ready (it said why on stderr)
            return failed()
        if bound:
            served.append(bound)
    for s in held:
        s.close()
    shown = f" metrics={','.join(served)}" if served else ""
    print("OCS ready " + " ".join(addresses) + f" workers={cfg.workers}{shown}", flush=True)
    rc = 0
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(0.5)
            if p.exitcode not in (None, 0) and not stopping:
                stop()  # one worker died: stop the rest rather than serve at reduced capacity silently
                rc = 1
    return rc if not any(p.exitcode for p in procs) else 1
