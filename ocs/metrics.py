"""Prometheus metrics of the server, with label children cached so the hot path pays one dict lookup."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
IN_FLIGHT = Gauge("ocs_in_flight_requests", "Requests received and not yet answered", registry=REGISTRY)
OPEN_SESSIONS = Gauge("ocs_open_sessions", "Credit-control sessions open in the store", registry=REGISTRY)
RESERVED_MONEY = Gauge("ocs_reserved_money_micro", "Money held by open reservations (micro-units)",
                       registry=REGISTRY)
BATCH_SIZE = Histogram("ocs_group_commit_batch_size", "Operations per durable write transaction",
                       registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
COMMIT_LATENCY = Histogram("ocs_group_commit_seconds", "Time of one durable write transaction",
                           registry=REGISTRY,
                           buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1))
PEERS = Gauge("ocs_peers_connected", "Diameter peers in the open state", registry=REGISTRY)
TOO_BUSY = Counter("ocs_too_busy", "Requests refused with DIAMETER_TOO_BUSY", registry=REGISTRY)
PROTOCOL_ERRORS = Counter("ocs_protocol_errors", "Malformed or refused messages, by Result-Code",
                          ["result_code"], registry=REGISTRY)
STORE_DEGRADED = Gauge("ocs_store_degraded", "1 while the store cannot write (disk full, I/O errors)",
                       registry=REGISTRY)
ADMISSION_WAIT = Gauge("ocs_admission_wait_seconds",
                       "Expected wait of a request admitted now: in flight / recent answer rate",
                       registry=REGISTRY)
STALE_SESSIONS = Counter("ocs_stale_sessions_closed", "Sessions closed by the sweeper", registry=REGISTRY)

# Per-request figures are plain counters on the loop thread (a prometheus_client child costs a lock
# per update); the collector below turns them into metric families when Prometheus scrapes.
_requests: dict[tuple[str, str, int], int] = {}
_latency: dict[str, list[float]] = {}  # command -> [per-bucket counts..., +Inf count, sum of seconds]


def count_request(command: str, request_type: str, result_code: int, seconds: float) -> None:
    key = (command, request_type, result_code)
    _requests[key] = _requests.get(key, 0) + 1
    lat = _latency.get(command)
    if lat is None:
        lat = _latency[command] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
    lat[bisect_left(LATENCY_BUCKETS, seconds)] += 1
    lat[-1] += seconds


class _RequestCollector:
    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ocs_requests", "Diameter requests answered, by command, CC-Request-Type and Result-Code",
            labels=["command", "request_type", "result_code"])
        for (command, rtype, code), n in dict(_requests).items():
            requests.add_metric([command, rtype, str(code)], n)
        yield requests
        latency = HistogramMetricFamily("ocs_request_latency_seconds",
                                        "From the request's arrival to its answer's write",
                                        labels=["command"])
        for command, lat in dict(_latency).items():
            counts = list(lat)
            total: float = 0  # bucket counts are ints; typed float as the list holding them is
            cumulative: list[tuple[str, float]] = []
            for bound, k in zip((*LATENCY_BUCKETS, float("inf")), counts[:-1], strict=True):
                total += k
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", total))
            latency.add_metric([command], cumulative, counts[-1])
        yield latency


REGISTRY.register(_RequestCollector())


def serve_metrics(host: str, port: int,
                  wrap: Callable[[Any], Any] | None = None) -> str:
    """Exposition on its own threads, off the event loop; `wrap` puts other paths (the readiness
    probe) in front of it. A port it cannot take is a ListenError naming the address. Returns the
    address it serves on (port 0 becomes the port it was given)."""
    import socket
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from ocs.config import join_hostport, listen_error

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    app = make_wsgi_app(REGISTRY)
    if wrap is not None:
        app = wrap(app)
    try:
        httpd = make_server(host, port, app, _Server, handler_class=_Quiet)
    except OSError as exc:
        raise listen_error(exc, join_hostport(host, port), "metrics") from None
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return join_hostport(host, httpd.server_address[1])
