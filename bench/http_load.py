"""A small HTTP/1.1 load generator: keep-alive connections, requests prepared as bytes.

A general client (httpx) spends more CPU per request than the API it would measure, on the same
two vCPUs; this one writes ready request bytes and reads the status line, the headers and a
Content-Length body, about 20 µs of Python per request. Closed loop (each connection sends its
next request when the answer came) or open loop (requests on a timetable; latency counted from
the scheduled instant, so a server that falls behind shows it).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.histogram import Histogram

Request = Callable[[int], bytes]  # request number -> the request's bytes


@dataclass(slots=True)
class HttpResult:
    label: str
    sent: int = 0
    seconds: float = 0.0
    status: Counter[int] = field(default_factory=Counter)
    histogram: Histogram = field(default_factory=Histogram)  # microseconds
    errors: int = 0  # connections lost

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.status.items() if 200 <= s < 300)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        """Latency percentile in ms."""
        return self.histogram.percentile(q) / 1000 if self.histogram.count else 0.0


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: bench", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method in ("POST", "PUT", "PATCH"):
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run(host: str, port: int, make: Request, *, label: str, connections: int,
              duration: float, rate: float | None = None, max_requests: int = 10_000_000) -> HttpResult:
    """Send for `duration` seconds (bounded by max_requests too); closed loop unless `rate`."""
    res = HttpResult(label)
    counter = iter(range(max_requests))
    t0 = time.perf_counter()
    end = t0 + duration

    async def conn(c: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        slot = c
        try:
            while True:
                if rate is None:
                    n = next(counter, None)
                    if n is None or time.perf_counter() >= end:
                        return
                    start = time.perf_counter()
                else:  # open loop: this connection's slots on the timetable
                    n, start = slot, t0 + slot / rate
                    slot += connections
                    if start >= end or n >= max_requests:
                        return
                    wait = start - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                writer.write(make(n))
                res.sent += 1
                status = await _answer(reader)
                res.status[status] += 1
                res.histogram.record(int((time.perf_counter() - start) * 1e6))
        except (ConnectionError, asyncio.IncompleteReadError):
            res.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(conn(c) for c in range(connections)))
    res.seconds = time.perf_counter() - t0
    return res
