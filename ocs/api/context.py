"""Each request's id, its X-Request-Id header, a problem+json for an unexpected error, and its
line in the metrics: a plain ASGI middleware (Starlette's BaseHTTPMiddleware costs a task and a
stream per request; this is a function call).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

from ocs.api.metrics import ApiMetrics
from ocs.api.problems import response

log = logging.getLogger("ocs.api")
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")

Scope = dict[str, Any]
Receive = Any
Send = Any


class RequestContext:
    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = given.decode() if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["role"] = rid, "none"
        status = [0]

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # never a traceback to the client
            log.exception("API request failed: %s %s", scope["method"], scope["path"])
            if status[0]:  # the answer had begun: the connection ends it
                raise
            await response("internal", "internal error; see the server log")(scope, receive,
                                                                             send_with_id)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", "unmatched"), scope["method"],
                                 status[0] or 500, state.get("role", "none"),
                                 time.perf_counter() - started)
