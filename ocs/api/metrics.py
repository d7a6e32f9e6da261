"""The API process's Prometheus metrics, served at GET /metrics of the API (no key needed, like
the probes): requests by route, status and role, their latency, webhook deliveries by outcome
and the outbox depth."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ocs.api.webhooks import Deliverer

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Webhooks(Collector):
    def __init__(self, deliverer: Deliverer | None) -> None:
        self.deliverer = deliverer

    def collect(self) -> Iterator[Metric]:
        d = self.deliverer
        if d is None:
            return
        out = CounterMetricFamily("ocs_webhook_deliveries", "Webhook POST outcomes: delivered, "
                                  "retry (failed, tried again later), failed (gave up)",
                                  labels=["outcome"])
        for outcome, n in d.outcomes.items():
            out.add_metric([outcome], n)
        yield out
        yield GaugeMetricFamily("ocs_webhook_outbox_depth",
                                "Webhook deliveries not yet made (due or in flight)", d.pending)


class ApiMetrics:
    def __init__(self, deliverer: Deliverer | None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("ocs_api_requests", "HTTP API requests by route, status and role",
                                ["route", "method", "status", "role"], registry=self.registry)
        self.latency = Histogram("ocs_api_request_seconds", "HTTP API request latency by route",
                                 ["route", "method"], buckets=BUCKETS, registry=self.registry)
        self.registry.register(_Webhooks(deliverer))

    def observe(self, route: str, method: str, status: int, role: str, seconds: float) -> None:
        self.requests.labels(route, method, str(status), role).inc()
        self.latency.labels(route, method).observe(seconds)
