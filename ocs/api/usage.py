"""Routes over sessions and usage: an account's open sessions, aborting one, CDRs (a page as
JSON, any range as NDJSON streamed while it is read) and usage sums per rating group.

The engine looks at a bounded number of records per command (ocs.charging.queries), so a route
here calls it again from the cursor it returns; between two calls the engine charges CCRs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import StreamingResponse

from balance.money import format_micro
from ocs.api import models as M
from ocs.api.params import Auth
from ocs.api.problems import MEDIA, Problem
from ocs.charging.usage_sums import UsageKey, add_usage
from ocs.instants import format_instant, parse_instant

Call = Callable[..., Awaitable[Any]]  # call(request, authorization, command, **args)
CALLS_PER_PAGE = 25  # engine calls one page may take before it returns short, with a cursor
NDJSON = "application/x-ndjson"


def session_model(s: dict[str, Any]) -> M.Session:
    return M.Session(
        id=s["id"], account=s["account"], subscription=s["subscription"], plan=s["plan"],
        currency=s["currency"], tariff_version=s["tariff_version"], origin_host=s["origin_host"],
        started=format_instant(s["started"]), last_seen=format_instant(s["last_seen"]),
        groups=[M.SessionGroup(rating_group=g["rating_group"], unit=g["unit"],
                               used_units=g["used_units"], amount=format_micro(g["amount"]),
                               granted_units=g["granted_units"], closed=g["closed"])
                for g in s["groups"]],
        aborted_at=format_instant(s["aborted_at"]) if "aborted_at" in s else None)


def cdr_data(c: dict[str, Any]) -> dict[str, Any]:
    """A CDR's JSON: money as a decimal string, times ISO 8601 (what M.Cdr documents)."""
    return {**c, "amount": format_micro(c["amount"]), "start_time": format_instant(c["start_time"]),
            "end_time": format_instant(c["end_time"])}


def _range(since: str | None, until: str | None) -> dict[str, int | None]:
    try:
        out = {"since": None if since is None else parse_instant(since, "since"),
               "until": None if until is None else parse_instant(until, "until")}
    except ValueError as exc:
        raise Problem("invalid", str(exc)) from None
    if out["since"] is not None and out["until"] is not None and out["until"] <= out["since"]:
        raise Problem("invalid", "until must be later than since")
    return out


Since = Annotated[str | None, Query(max_length=40, description="ISO 8601 or unix seconds; CDRs "
                                                             "ending at or after it")]
Until = Annotated[str | None, Query(max_length=40, description="CDRs ending before it")]


def register(app: FastAPI, call: Call) -> None:
    """Add the routes to `app`; `call` runs a command for the request's API key."""
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such account", "content": {MEDIA: {}}}}

    @app.get("/v1/accounts/{account_id}/sessions", response_model=M.SessionPage,
             tags=["sessions"], responses=not_found)
    async def sessions(request: Request, account_id: str, authorization: Auth = None,
                       cursor: Annotated[str, Query(max_length=512)] = "",
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> M.SessionPage:
        items: list[M.Session] = []
        nxt: str | None = cursor
        for _ in range(CALLS_PER_PAGE):
            got = await call(request, authorization, "session.list", ident=account_id,
                             after=nxt or "", limit=limit - len(items))
            items += [session_model(s) for s in got["sessions"]]
            nxt = got["next"]
            if nxt is None or len(items) >= limit:
                break
        return M.SessionPage(items=items, next_cursor=nxt)

    @app.post("/v1/sessions/{session_id:path}/abort", status_code=202, response_model=M.Session,
              tags=["sessions"],
              responses={404: {"description": "no such session", "content": {MEDIA: {}}},
                         409: {"description": "the session is not open", "content": {MEDIA: {}}}})
    async def abort(request: Request, session_id: Annotated[str, Path(max_length=512)],
                    authorization: Auth = None) -> M.Session:
        """End an open session now: its holds are released, its usage so far is charged (CDRs
        with termination cause ABORTED) and its next CCR gets 5002. Answers 202: the gateway
        is told by the network side (RAR/ASR), not by this call."""
        return session_model(await call(request, authorization, "session.abort",
                                        session_id=session_id))

    def cdr_args(account: str | None, session: str | None, since: str | None,
                 until: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {**_range(since, until), "session": session}
        if account is not None:
            args["ident"] = account
        return args

    @app.get("/v1/cdrs", response_model=M.CdrPage, tags=["usage"], responses=not_found)
    async def cdrs(request: Request, authorization: Auth = None,
                   account: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                   session: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
                   since: Since = None, until: Until = None,
                   cursor: Annotated[int, Query(ge=0, le=2**62)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> M.CdrPage:
        """CDRs in id order, by account, session and end time; a selfcare key names its own
        account. For a large range, /v1/cdrs/stream sends them all as NDJSON."""
        args = cdr_args(account, session, since, until)
        items: list[M.Cdr] = []
        nxt: int | None = cursor
        for _ in range(CALLS_PER_PAGE):
            got = await call(request, authorization, "cdr.list", after=nxt or 0,
                             limit=limit - len(items), **args)
            items += [M.Cdr(**cdr_data(c)) for c in got["cdrs"]]
            nxt = got["next"]
            if nxt is None or len(items) >= limit:
                break
        return M.CdrPage(items=items, next_cursor=nxt)

    @app.get("/v1/cdrs/stream", tags=["usage"], response_class=StreamingResponse,
             responses={200: {"description": "one CDR (the shape of Cdr) per line",
                              "content": {NDJSON: {}}}, **not_found})
    async def cdr_stream(request: Request, authorization: Auth = None,
                         account: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                         session: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
                         since: Since = None, until: Until = None) -> StreamingResponse:
        """Every matching CDR as NDJSON, read from the engine a page at a time while it is sent.
        A stream cut short (the engine went away) ends without its last chunk: the client sees
        an incomplete response, never a shorter list that looks whole."""
        args = cdr_args(account, session, since, until)
        first = await call(request, authorization, "cdr.list", after=0, limit=1000, **args)

        async def lines() -> AsyncIterator[bytes]:
            got = first
            while True:
                if got["cdrs"]:
                    yield b"".join(json.dumps(cdr_data(c), separators=(",", ":")).encode() + b"\n"
                                   for c in got["cdrs"])
                if got["next"] is None:
                    return
                got = await call(request, authorization, "cdr.list", after=got["next"],
                                 limit=1000, **args)

        return StreamingResponse(lines(), media_type=NDJSON)

    @app.get("/v1/accounts/{account_id}/usage", response_model=M.UsageSummary, tags=["usage"],
             responses=not_found)
    async def usage(request: Request, account_id: str, authorization: Auth = None,
                    since: Since = None, until: Until = None) -> M.UsageSummary:
        """Usage per rating group (and unit, currency) of the account's CDRs in the range."""
        rng = _range(since, until)
        sums: dict[UsageKey, dict[str, Any]] = {}
        after: int | None = 0
        account = account_id
        while after is not None:
            got = await call(request, authorization, "usage.summary", ident=account_id,
                             after=after, **rng)
            add_usage(sums, got["groups"])
            after = got["next"]
            account = got.get("account", account)
        return M.UsageSummary(
            account=account,
            since=None if rng["since"] is None else format_instant(rng["since"]),
            until=None if rng["until"] is None else format_instant(rng["until"]),
            groups=[M.UsageGroup(**{**g, "amount": format_micro(g["amount"])})
                    for _k, g in sorted(sums.items())])
