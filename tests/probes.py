"""Reading a running server's metrics and probes over HTTP, as a monitoring system would: shared
by the tests of every folder (this module's folder is on sys.path, see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def probe(port: int, path: str = "/readyz", method: str = "GET") -> tuple[int, str, dict]:
    """(status, content type, JSON body) of a probe, a 503 included."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, ctype, raw = r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers["Content-Type"], e.read()
    return status, ctype, json.loads(raw) if raw else {}


async def wait_metrics(port: int, ok: Callable[[dict[str, float]], bool],
                       seconds: float = 30.0) -> dict[str, float]:
    """Scrape until ok(values) (the gauges are refreshed once a second), at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        values = await asyncio.to_thread(scrape, port)
        if ok(values) or time.monotonic() > deadline:
            return values
        await asyncio.sleep(0.2)
