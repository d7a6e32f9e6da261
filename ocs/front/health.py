"""Readiness of the server as an operator's probe sees it: `GET /readyz` on the metrics address.

200 while the server charges; 503 with the reason while it cannot (starting, the store cannot
write, the engine is gone, shutting down), so a load balancer, an orchestrator or an operator's
monitor takes it out of rotation without parsing metrics. The CDR export failing does not stop
charging (the CDRs wait in the store), so it is reported in the body and leaves the probe at 200.
`GET /livez` answers 200 as long as the process serves HTTP at all.

The fields are plain attributes set on the event loop and read by the HTTP thread: each is one
assignment of an immutable value, so a reader sees either the old or the new state, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Readiness:
    started: bool = False          # listeners open and the engine answered READY
    stopping: bool = False         # SIGTERM received: draining, new requests get 3004
    engine_lost: bool = False      # the engine process died; the server is about to exit 1
    store_degraded: bool = False   # the engine's last write failed (disk full, EIO, map full)
    export_failing: bool = False   # the CDR export's last run failed (charging goes on)

    def state(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the body's fields)."""
        reasons = []
        if not self.started:
            reasons.append("starting")
        if self.stopping:
            reasons.append("shutting down: draining in-flight requests, new ones get 3004")
        if self.engine_lost:
            reasons.append("the charging engine is gone")
        if self.store_degraded:
            reasons.append("the store cannot write: charging requests get 3004 until a write "
                           "succeeds")
        ready = not reasons
        body = {"status": "ready" if ready else "not ready",
                "store": "cannot write" if self.store_degraded else "writable",
                "cdr_export": "failing" if self.export_failing else "ok",
                "reasons": reasons}
        return ready, body


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def probe_app(readiness: Readiness, fallback: WsgiApp) -> WsgiApp:
    """/readyz and /livez; every other path goes to `fallback` (the Prometheus exposition)."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/readyz", "/livez"):
            return fallback(environ, start_response)
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            body = json.dumps({"type": "about:blank", "title": "Method Not Allowed", "status": 405,
                               "detail": f"{path} answers GET and HEAD"}).encode()
            start_response("405 Method Not Allowed", [("Content-Type", "application/problem+json"),
                                                      ("Allow", "GET, HEAD"),
                                                      ("Content-Length", str(len(body)))])
            return [body]
        if path == "/livez":
            ready, fields = True, {"status": "alive"}
        else:
            ready, fields = readiness.state()
        body = json.dumps(fields).encode()
        start_response("200 OK" if ready else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                        ("Content-Length", str(len(body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return app
