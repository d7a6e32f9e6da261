"""RFC 9457 problem details: every error the API answers is application/problem+json with a
stable `type` (a URI under PROBLEM_BASE naming the kind), a `title`, the `status` and a `detail`
naming what is wrong (the field, the account, the key)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded by the handlers: the webhook worker alone raises Problem, no more
    from fastapi import Request
    from fastapi.responses import JSONResponse

PROBLEM_BASE = "https://ocs.example.org/problems/"
MEDIA = "application/problem+json"
# refusal kind (ocs.charging.commands) -> HTTP status and title
KINDS: dict[str, tuple[int, str]] = {
    "invalid": (422, "invalid request"),
    "not_found": (404, "not found"),
    "conflict": (409, "conflict"),
    "unauthorized": (401, "unauthorized"),
    "forbidden": (403, "forbidden"),
    "bad_request": (400, "bad request"),
    "method_not_allowed": (405, "method not allowed"),
    "too_many_requests": (429, "too many requests"),
    "unavailable": (503, "service unavailable"),
    "internal": (500, "internal error"),
}
_BY_STATUS = {status: kind for kind, (status, _t) in KINDS.items()}


class Problem(Exception):
    def __init__(self, kind: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.headers = kind, detail, headers or {}


def response(kind: str, detail: str, headers: dict[str, str] | None = None,
             extra: dict[str, Any] | None = None) -> JSONResponse:
    from fastapi.responses import JSONResponse
    status, title = KINDS.get(kind, KINDS["internal"])
    body = {"type": PROBLEM_BASE + kind.replace("_", "-"), "title": title, "status": status,
            "detail": detail, **(extra or {})}
    h = dict(headers or {})
    if status == 401:
        h.setdefault("WWW-Authenticate", 'Bearer realm="ocs"')
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=h)


async def on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return response(exc.kind, exc.detail, exc.headers)


async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
    from fastapi.exceptions import RequestValidationError
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
               "message": e.get("msg", "invalid")} for e in exc.errors()]
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    return response("invalid", f"{first['field']}: {first['message']}", extra={"errors": errors})


async def on_http(_request: Request, exc: Exception) -> JSONResponse:
    from starlette.exceptions import HTTPException as StarletteHTTPException
    assert isinstance(exc, StarletteHTTPException)
    kind = _BY_STATUS.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    return response(kind, str(exc.detail), dict(exc.headers or {}))
