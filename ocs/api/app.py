"""The HTTP API's routes: JSON over the commands of ocs.charging.commands.

Every route but the probes and the OpenAPI document needs `Authorization: Bearer <API key>`.
The key's SHA-256 goes with each command to the engine, which checks it and its role in the
command's own transaction (a key revoked by a command that has returned is refused at once) and
audits every change with the key's name. Here: the HTTP shapes, money as decimal strings, the
Idempotency-Key header (scoped to the key), a per-key rate limit, problem+json for every error.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from balance.money import MoneyError, format_micro, to_micro
from ocs.api import models as M
from ocs.api import usage as usage_routes
from ocs.api.backend import Backend
from ocs.api.context import RequestContext
from ocs.api.metrics import ApiMetrics
from ocs.api.params import Auth, Idem, OptIdem
from ocs.api.problems import MEDIA, Problem, on_http, on_problem, on_validation, response
from ocs.api.ratelimit import RateLimiter
from ocs.api.reference import reference_page
from ocs.api.webhooks import Deliverer
from ocs.api.webhooks import body as webhook_body
from ocs.charging.access import digest
from ocs.instants import format_instant, parse_instant

log = logging.getLogger("ocs.api")
_BEARER = re.compile(r"Bearer +(\S{1,200})", re.IGNORECASE)
PAGE = 100
MAX_PAGE = 1000


def _iso(ts: int | None) -> str | None:
    return None if ts is None else format_instant(ts)


def _money(text: str, field: str, *, positive: bool = False, nonzero: bool = False,
           not_negative: bool = False) -> int:
    try:
        v = to_micro(text)
    except MoneyError as exc:
        raise Problem("invalid", f"{field}: {exc}") from None
    if positive and v <= 0:
        raise Problem("invalid", f"{field}: must be positive")
    if nonzero and v == 0:
        raise Problem("invalid", f"{field}: must not be zero")
    if not_negative and v < 0:
        raise Problem("invalid", f"{field}: must not be negative")
    return v


def _instant(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_instant(text, field)
    except ValueError as exc:
        raise Problem("invalid", str(exc)) from None


def _account(a: dict[str, Any]) -> M.Account:
    avail = a["balance"] + a["credit_limit"] - a["reserved"]
    return M.Account(id=a["id"], currency=a["currency"], balance=format_micro(a["balance"]),
                     reserved=format_micro(a["reserved"]), available=format_micro(avail),
                     credit_limit=format_micro(a["credit_limit"]), plan=a["plan"],
                     status=a["status"], aliases=a["aliases"], created=_iso(a["created"]) or "",
                     updated=_iso(a["updated"]) or "")


def _bundle(b: dict[str, Any]) -> M.Bundle:
    money = b["unit"] == "money"
    fmt: Callable[[int], str] = format_micro if money else str
    return M.Bundle(id=b["id"], unit=b["unit"], initial=fmt(b["initial"]) if b["initial"] else None,
                    remaining=fmt(b["remaining"]),
                    reserved=fmt(b["reserved"]), rating_groups=b["rating_groups"],
                    priority=b["priority"], valid_from=_iso(b["valid_from"]),
                    expires=_iso(b["expires"]))


def build_app(backend: Backend, *, rate: float = 2000.0, burst: float = 4000.0,
              deliverer: Deliverer | None = None) -> FastAPI:
    app = FastAPI(title="OCS API", version="1", docs_url=None, redoc_url=None,
                  description=__doc__ or "", openapi_url="/openapi.json",
                  responses={400: {"description": "a body that is not JSON", "content": {MEDIA: {}}},
                             401: {"description": "no or a bad API key",
                                   "content": {MEDIA: {}}},
                             403: {"description": "outside the key's role", "content": {MEDIA: {}}},
                             404: {"description": "no such resource", "content": {MEDIA: {}}},
                             409: {"description": "refused in the resource's state (an account "
                                                  "suspended or closed, a key reused)",
                                   "content": {MEDIA: {}}},
                             422: {"description": "invalid input", "content": {MEDIA: {}}},
                             429: {"description": "rate limit", "content": {MEDIA: {}}},
                             503: {"description": "the engine cannot be reached or cannot "
                                                  "write; retry", "content": {MEDIA: {}}}})
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    limiter = RateLimiter(rate, burst)
    metrics = ApiMetrics(deliverer)
    roles: dict[bytes, str] = {}  # key digest -> role, for the metrics' label only (the engine
    #                               checks every request's key and role itself)

    async def on_http_any(request: Request, exc: Exception) -> Response:
        """405 names every method of the path in Allow (FastAPI routes one method each, so
        Starlette would name only the first route's)."""
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
            allowed: set[str] = set()
            for route in app.routes:
                match, _child = route.matches(request.scope)
                if match is not Match.NONE:
                    allowed |= set(getattr(route, "methods", None) or ())
            return response("method_not_allowed", f"{request.method} is not allowed here",
                            {"Allow": ", ".join(sorted(allowed))})
        return await on_http(request, exc)

    app.add_exception_handler(StarletteHTTPException, on_http_any)

    app.add_middleware(RequestContext, metrics=metrics)

    def actor(request: Request, authorization: str | None) -> dict[str, Any]:
        m = _BEARER.fullmatch(authorization or "")
        if m is None:
            raise Problem("unauthorized", "an API key is required: Authorization: Bearer <key>")
        key = digest(m.group(1))
        wait = limiter.take(key)
        if wait > 0:
            raise Problem("too_many_requests", "rate limit of this API key reached",
                          {"Retry-After": str(max(1, int(wait + 0.999)))})
        return {"key": key, "request_id": request.state.request_id}


    async def call(request: Request, authorization: str | None, name: str, **args: Any) -> Any:
        who = actor(request, authorization)
        role = roles.get(who["key"])
        if role is None:
            found = await backend.call("apikey.role", {"digest": who["key"]}, {"cli": "api"})
            if found is not None and len(roles) < 10_000:
                roles[who["key"]] = role = found
        request.state.role = role or "unknown"
        return await backend.call(name, args, who)

    def scoped(request: Request, authorization: str | None, key: str) -> str:
        """The idempotency key as stored: scoped to the API key, so clients never collide."""
        m = _BEARER.fullmatch(authorization or "")
        return f"api:{digest(m.group(1)).hex()[:16] if m else '-'}:{key}"

    # -- probes ---------------------------------------------------------------------------------
    @app.get("/healthz", response_model=M.Health, tags=["operations"])
    async def healthz() -> M.Health:
        return M.Health(status="ok")

    @app.get("/readyz", response_model=M.Health, tags=["operations"],
             responses={503: {"description": "the engine does not answer", "content": {MEDIA: {}}}})
    async def readyz() -> M.Health:
        await backend.call("engine.ping", {}, {"cli": "api-readyz"})
        return M.Health(status="ready")

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False)
    async def reference() -> Response:
        """The API reference, drawn from /openapi.json by a page served from here (no CDN)."""
        return HTMLResponse(reference_page(app.openapi()))

    # -- accounts -------------------------------------------------------------------------------
    @app.post("/v1/accounts", status_code=201, response_model=M.Account, tags=["accounts"],
              responses={409: {"description": "id or alias taken", "content": {MEDIA: {}}}})
    async def create_account(request: Request, body: M.AccountIn, authorization: Auth = None,
                             idempotency_key: OptIdem = None) -> M.Account:
        a = await call(request, authorization, "account.create",
                       key=scoped(request, authorization, idempotency_key or uuid.uuid4().hex),
                       account_id=body.id, currency=body.currency.upper(),
                       balance=_money(body.balance, "balance", not_negative=True),
                       credit_limit=_money(body.credit_limit, "credit_limit", not_negative=True),
                       plan=body.plan, aliases=body.aliases)
        return _account(a)

    @app.get("/v1/accounts", response_model=M.AccountPage, tags=["accounts"])
    async def list_accounts(request: Request, authorization: Auth = None,
                            cursor: Annotated[str, Query(max_length=64)] = "",
                            limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
                            status: M.Status | None = None,
                            plan: Annotated[str | None, Query(max_length=64)] = None,
                            imsi: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                            id_prefix: Annotated[str, Query(max_length=64)] = "") -> M.AccountPage:
        page = await call(request, authorization, "account.list", after=cursor, limit=limit,
                          status=status, plan=plan, prefix=id_prefix, alias=imsi)
        items = [_account(a) for a in page]
        return M.AccountPage(items=items, next_cursor=items[-1].id if len(items) == limit else None)

    @app.get("/v1/accounts/{account_id}", response_model=M.Account, tags=["accounts"],
             responses={404: {"description": "no such account", "content": {MEDIA: {}}}})
    async def get_account(request: Request, account_id: str, authorization: Auth = None) -> M.Account:
        found = await call(request, authorization, "account.show", ident=account_id)
        return _account(found["account"])

    @app.patch("/v1/accounts/{account_id}", response_model=M.Account, tags=["accounts"],
               responses={404: {"description": "no such account", "content": {MEDIA: {}}},
                          409: {"description": "refused in its state", "content": {MEDIA: {}}}})
    async def update_account(request: Request, account_id: str, body: M.AccountPatch,
                             authorization: Auth = None) -> M.Account:
        limit = None if body.credit_limit is None else \
            _money(body.credit_limit, "credit_limit", not_negative=True)
        a = await call(request, authorization, "account.update",
                       key=scoped(request, authorization, uuid.uuid4().hex), ident=account_id,
                       plan=body.plan, credit_limit=limit, status=body.status)
        return _account(a)

    @app.get("/v1/accounts/{account_id}/balance", response_model=M.Balance, tags=["balance"],
             responses={404: {"description": "no such account", "content": {MEDIA: {}}}})
    async def balance(request: Request, account_id: str, authorization: Auth = None) -> M.Balance:
        found = await call(request, authorization, "account.show", ident=account_id)
        a = _account(found["account"])
        return M.Balance(account=a.id, currency=a.currency, balance=a.balance, reserved=a.reserved,
                         available=a.available, credit_limit=a.credit_limit,
                         bundles=[_bundle(b) for b in found["bundles"]])

    async def credit(request: Request, authorization: str | None, command: str, account_id: str,
                     body: M.MoneyIn, key: str, response: Response) -> M.Credited:
        amount = _money(body.amount, "amount", positive=command == "account.topup",
                        nonzero=True)
        args: dict[str, Any] = {"key": scoped(request, authorization, key), "ident": account_id,
                                "amount": amount,
                                "currency": body.currency.upper() if body.currency else None}
        if command == "account.topup":
            args["reason"] = body.reason or "topup"
        elif body.reason is None:
            raise Problem("invalid", "reason: an adjustment needs a reason")
        else:
            args["reason"] = body.reason
        try:
            done = await call(request, authorization, command, **args)
        except Problem as exc:
            if exc.kind == "conflict" and exc.detail.startswith("idempotency key"):
                raise Problem("conflict", f"Idempotency-Key {key!r} was used for another "
                                          "request (another account or amount)") from None
            raise
        response.headers["Location"] = f"/v1/accounts/{done['id']}/balance"
        return M.Credited(account=done["id"], balance=format_micro(done["balance"]))

    @app.post("/v1/accounts/{account_id}/topups", status_code=201, response_model=M.Credited,
              tags=["balance"],
              responses={404: {"description": "no such account", "content": {MEDIA: {}}},
                         409: {"description": "the key was used for another body, or the "
                                              "account is not active", "content": {MEDIA: {}}}})
    async def topup(request: Request, response: Response, account_id: str, body: M.MoneyIn,
                    idempotency_key: Idem, authorization: Auth = None) -> M.Credited:
        return await credit(request, authorization, "account.topup", account_id, body,
                            idempotency_key, response)

    @app.post("/v1/accounts/{account_id}/adjustments", status_code=201, response_model=M.Credited,
              tags=["balance"],
              responses={404: {"description": "no such account", "content": {MEDIA: {}}},
                         409: {"description": "the key was used for another body",
                               "content": {MEDIA: {}}}})
    async def adjust(request: Request, response: Response, account_id: str, body: M.MoneyIn,
                     idempotency_key: Idem, authorization: Auth = None) -> M.Credited:
        return await credit(request, authorization, "account.adjust", account_id, body,
                            idempotency_key, response)

    @app.get("/v1/accounts/{account_id}/bundles", response_model=list[M.Bundle], tags=["balance"],
             responses={404: {"description": "no such account", "content": {MEDIA: {}}}})
    async def bundles(request: Request, account_id: str, authorization: Auth = None) -> list[M.Bundle]:
        found = await call(request, authorization, "account.show", ident=account_id)
        return [_bundle(b) for b in found["bundles"]]

    @app.post("/v1/accounts/{account_id}/bundles", status_code=201, response_model=M.BundleCreated,
              tags=["balance"],
              responses={404: {"description": "no such account", "content": {MEDIA: {}}}})
    async def add_bundle(request: Request, account_id: str, body: M.BundleIn,
                         authorization: Auth = None, idempotency_key: OptIdem = None
                         ) -> M.BundleCreated:
        if body.unit == "money":
            amount = _money(body.amount, "amount", positive=True)
        elif "." in body.amount:
            raise Problem("invalid", f"amount: {body.unit} are a whole number")
        else:
            amount = int(body.amount)
            if amount <= 0:
                raise Problem("invalid", "amount: must be positive")
        expires = _instant(body.expires, "expires")
        if expires is not None and expires <= time.time():
            raise Problem("invalid", "expires: already past")
        for rg in body.rating_groups:
            if not 0 <= rg < 0xFFFFFFFF:
                raise Problem("invalid", f"rating_groups: bad rating group {rg}")
        done = await call(request, authorization, "account.bundle",
                          key=scoped(request, authorization, idempotency_key or uuid.uuid4().hex),
                          ident=account_id, unit=body.unit, amount=amount,
                          rating_groups=body.rating_groups,
                          valid_from=_instant(body.valid_from, "valid_from"), expires=expires,
                          priority=body.priority)
        return M.BundleCreated(account=done["id"], bundle=done["bundle"])

    @app.get("/v1/accounts/{account_id}/ledger", response_model=M.LedgerPage, tags=["balance"],
             responses={404: {"description": "no such account", "content": {MEDIA: {}}}})
    async def ledger(request: Request, account_id: str, authorization: Auth = None,
                     cursor: Annotated[int, Query(ge=0, le=2**62)] = 0,
                     limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE) -> M.LedgerPage:
        found = await call(request, authorization, "account.ledger", ident=account_id,
                           after_seq=cursor)
        entries = found["entries"][:limit]
        items = [M.LedgerEntry(seq=e["seq"], time=_iso(e["ts"]) or "", kind=e["kind"],
                               delta=format_micro(e["delta"]), balance=format_micro(e["balance"]),
                               reserved_delta=format_micro(e["reserved_delta"]),
                               reserved=format_micro(e["reserved"]), session=e["session_id"],
                               rating_group=e["rating_group"], reason=e["reason"])
                 for e in entries]
        more = len(found["entries"]) > limit
        return M.LedgerPage(items=items, next_cursor=items[-1].seq if more else None)

    # -- tariffs --------------------------------------------------------------------------------
    def _tariff(rec: dict[str, Any]) -> M.Tariff:
        return M.Tariff(version=rec["version"], effective_from=_iso(rec["effective_from"]) or "",
                        loaded_at=_iso(rec["loaded_at"]) or "", source=rec["source"],
                        currency=rec["currency"], sha256=rec["sha256"], plans=rec["plans"],
                        rates=rec["rates"], retired_at=_iso(rec["retired_at"]),
                        in_force=rec["in_force"])

    async def tariff_text(request: Request) -> str:
        raw = await request.body()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem("invalid", "body: a tariff is UTF-8 TOML text") from None

    @app.get("/v1/tariffs", response_model=list[M.Tariff], tags=["tariffs"])
    async def tariffs(request: Request, authorization: Auth = None) -> list[M.Tariff]:
        return [_tariff(r) for r in await call(request, authorization, "tariff.list")]

    @app.post("/v1/tariffs", status_code=201, response_model=M.TariffLoaded, tags=["tariffs"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/toml": {"schema": {"type": "string"}},
                  "text/plain": {"schema": {"type": "string"}}}}})
    async def load_tariff(request: Request, authorization: Auth = None,
                          effective_from: Annotated[str | None, Query(max_length=40)] = None,
                          source: Annotated[str, Query(min_length=1, max_length=200)] = "api.toml"
                          ) -> M.TariffLoaded:
        text = await tariff_text(request)
        now = int(time.time())
        eff = _instant(effective_from, "effective_from")
        done = await call(request, authorization, "tariff.load", text=text, source=source,
                          effective_from=now if eff is None or eff < now else eff)
        return M.TariffLoaded(version=done["version"],
                              effective_from=_iso(done["effective_from"]) or "",
                              in_force=done["in_force"])

    @app.get("/v1/tariffs/{version:int}", response_model=M.TariffText, tags=["tariffs"],
             responses={404: {"description": "no such version", "content": {MEDIA: {}}}})
    async def get_tariff(request: Request, version: Annotated[int, Path(ge=1, le=2**62)],
                         authorization: Auth = None) -> M.TariffText:
        rec = await call(request, authorization, "tariff.get", version=version)
        return M.TariffText(**_tariff(rec).model_dump(), text=rec["text"])

    @app.post("/v1/tariffs/check", response_model=M.TariffChecked, tags=["tariffs"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/toml": {"schema": {"type": "string"}},
                  "text/plain": {"schema": {"type": "string"}}}}})
    async def check_tariff(request: Request, authorization: Auth = None,
                           rating_groups: Annotated[str | None, Query(
                               max_length=2000, pattern=r"^[^,:]+:[0-9]{1,10}(,[^,:]+:[0-9]{1,10})*$",
                               description="PLAN:RG,... each must have a rate")] = None,
                           source: Annotated[str, Query(min_length=1, max_length=200)] = "api.toml"
                           ) -> M.TariffChecked:
        """Validate a tariff without storing it: 200, or 422 naming the file's line and key."""
        pairs = [list(item.rsplit(":", 1)) for item in rating_groups.split(",")] \
            if rating_groups else None
        got = await call(request, authorization, "tariff.check", text=await tariff_text(request),
                         source=source,
                         rating_groups=[[p, int(rg)] for p, rg in pairs] if pairs else None)
        return M.TariffChecked(valid=True, **got)

    @app.post("/v1/tariffs/{version}/retire", response_model=M.Tariff, tags=["tariffs"],
              responses={404: {"description": "no such version", "content": {MEDIA: {}}},
                         409: {"description": "none would be in force", "content": {MEDIA: {}}}})
    async def retire_tariff(request: Request, version: Annotated[int, Path(ge=1, le=2**62)],
                            authorization: Auth = None) -> M.Tariff:
        await call(request, authorization, "tariff.retire", version=version)
        recs = await call(request, authorization, "tariff.list")
        return _tariff(next(r for r in recs if r["version"] == version))

    # -- audit ----------------------------------------------------------------------------------
    @app.get("/v1/audit", response_model=M.AuditPage, tags=["audit"])
    async def audit(request: Request, authorization: Auth = None,
                    cursor: Annotated[int, Query(ge=0, le=2**62)] = 0,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
                    since: Annotated[str | None, Query(max_length=40)] = None,
                    account: Annotated[str | None, Query(min_length=1, max_length=64)] = None
                    ) -> M.AuditPage:
        got = await call(request, authorization, "audit.list", after=cursor,
                         since=_instant(since, "since"), account=account, limit=limit)
        items = [M.AuditEntry(**{**e, "at": _iso(e["at"]) or ""}) for e in got]
        return M.AuditPage(items=items,
                           next_cursor=items[-1].position if len(items) == limit else None)

    # -- webhooks, events and thresholds ---------------------------------------------------------
    def _webhook(w: dict[str, Any]) -> M.Webhook:
        return M.Webhook(id=w["id"], url=w["url"], events=w["events"],
                         created=_iso(w["created"]) or "")

    @app.post("/v1/webhooks", status_code=201, response_model=M.WebhookCreated, tags=["webhooks"])
    async def create_webhook(request: Request, body: M.WebhookIn,
                             authorization: Auth = None) -> M.WebhookCreated:
        secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
        w = await call(request, authorization, "webhook.create", url=body.url,
                       events=list(body.events), secret=secret)
        return M.WebhookCreated(**_webhook(w).model_dump(), secret=secret)

    @app.get("/v1/webhooks", response_model=list[M.Webhook], tags=["webhooks"])
    async def list_webhooks(request: Request, authorization: Auth = None) -> list[M.Webhook]:
        return [_webhook(w) for w in await call(request, authorization, "webhook.list")]

    @app.delete("/v1/webhooks/{webhook_id}", response_model=M.Webhook, tags=["webhooks"],
                responses={404: {"description": "no such subscription", "content": {MEDIA: {}}}})
    async def delete_webhook(request: Request, webhook_id: Annotated[str, Path(max_length=64)],
                             authorization: Auth = None) -> M.Webhook:
        return _webhook(await call(request, authorization, "webhook.delete", sub_id=webhook_id))

    @app.get("/v1/webhooks/{webhook_id}/deliveries", response_model=list[M.Delivery],
             tags=["webhooks"])
    async def deliveries(request: Request, webhook_id: Annotated[str, Path(max_length=64)],
                         authorization: Auth = None, state: M.DeliveryState | None = None,
                         limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE
                         ) -> list[M.Delivery]:
        got = await call(request, authorization, "webhook.deliveries", subscription=webhook_id,
                         state=state, limit=limit)
        return [M.Delivery(**{**d, "next_at": _iso_ms(d["next_at"]),
                              "last_at": _iso_ms(d["last_at"])}) for d in got]

    @app.get("/v1/events", response_model=M.EventPage, tags=["webhooks"])
    async def events(request: Request, authorization: Auth = None,
                     cursor: Annotated[int, Query(ge=0, le=2**62)] = 0,
                     limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
                     type: M.EventType | None = None,
                     account: Annotated[str | None, Query(min_length=1, max_length=64)] = None
                     ) -> M.EventPage:
        got = await call(request, authorization, "webhook.events", after=cursor,
                         type=None if type == "*" else type, account=account, limit=limit)
        items = [M.Event(**json.loads(webhook_body(e))) for e in got]
        last = int(items[-1].id.removeprefix("evt_")) if items else None
        return M.EventPage(items=items, next_cursor=last if len(items) == limit else None)

    async def set_threshold(request: Request, authorization: str | None, body: M.ThresholdIn,
                            **target: str) -> M.Threshold:
        low = None if body.low_balance is None else _money(body.low_balance, "low_balance")
        done = await call(request, authorization, "alert.set", low_balance=low, **target)
        return M.Threshold(account=done["account"], plan=done["plan"],
                           low_balance=None if low is None else format_micro(low))

    @app.put("/v1/accounts/{account_id}/thresholds", response_model=M.Threshold, tags=["webhooks"],
             responses={404: {"description": "no such account", "content": {MEDIA: {}}}})
    async def account_threshold(request: Request, account_id: str, body: M.ThresholdIn,
                                authorization: Auth = None) -> M.Threshold:
        return await set_threshold(request, authorization, body, ident=account_id)

    @app.put("/v1/plans/{plan}/thresholds", response_model=M.Threshold, tags=["webhooks"])
    async def plan_threshold(request: Request, plan: Annotated[str, Path(max_length=64)],
                             body: M.ThresholdIn, authorization: Auth = None) -> M.Threshold:
        return await set_threshold(request, authorization, body, plan=plan)

    @app.get("/v1/thresholds", response_model=list[M.Threshold], tags=["webhooks"])
    async def thresholds(request: Request, authorization: Auth = None) -> list[M.Threshold]:
        got = await call(request, authorization, "alert.list")
        return [M.Threshold(account=t.get("account"), plan=t.get("plan"),
                            low_balance=format_micro(t["low_balance"])) for t in got]

    usage_routes.register(app, call)
    return app


def _iso_ms(ms: int) -> str | None:
    return format_instant(ms // 1000) if ms else None
