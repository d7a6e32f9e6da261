"""Webhook delivery: POST each event of the outbox to its subscribers, signed, until it lands.

The worker runs in the API process (a process of its own beside the engine, so a receiver that
is slow or down never slows charging). It asks the engine what is due (`outbox.next`, a read),
leases due deliveries (`outbox.claim`), POSTs them with at most `concurrency` in flight, and
reports outcomes in batches (`outbox.report`); a failure is retried with exponential backoff
(base, 2 base, 4 base ... at most an hour apart) for up to 24 h from its first attempt. A lease
outlives the request timeout, so a worker killed mid-POST leaves the delivery due again: each
event reaches each subscriber at least once, and its `id` lets the receiver drop a repeat.

The request: `POST url`, body JSON `{"id", "type", "created", "account", "data"}` (money as
decimal strings), headers `OCS-Event-Id`, `OCS-Event-Type` and `OCS-Signature: t=T,v1=HEX`,
HEX the HMAC-SHA256 with the subscription's secret of `T + "." + body` (T in unix seconds):
the scheme of Stripe's webhooks. A 2xx is delivered; anything else, a timeout or a refused
connection is retried. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx

from balance.money import format_micro
from ocs.api.backend import Backend
from ocs.api.problems import Problem
from ocs.instants import format_instant

log = logging.getLogger("ocs.webhooks")
SIGNATURE: Final = "OCS-Signature"
ACTOR: Final = {"cli": "webhook-worker"}
MONEY_FIELDS: Final = frozenset({"amount", "balance", "threshold"})
BUNDLE_FIELDS: Final = frozenset({"initial", "remaining"})  # money when the bundle is money


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance: int = 300) -> bool:
    """What a receiver does: the signature matches and its time is within `tolerance` s."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def body(event: dict[str, Any]) -> bytes:
    """The event as the receiver gets it, the same bytes on every attempt."""
    money = MONEY_FIELDS | (BUNDLE_FIELDS if event["data"].get("unit") == "money" else frozenset())
    data = {k: format_micro(v) if k in money and isinstance(v, int) else v
            for k, v in event["data"].items()}
    doc = {"id": event["id"], "type": event["type"], "created": format_instant(event["at"]),
           "account": event["account"], "data": data}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@dataclass(slots=True)
class Settings:
    poll: float = 0.25          # s between looks at the outbox when nothing is due
    backoff_base: float = 5.0   # s before the first retry
    timeout: float = 10.0       # s for one POST
    concurrency: int = 16       # POSTs in flight


class Deliverer:
    def __init__(self, backend: Backend, settings: Settings | None = None) -> None:
        self.backend = backend
        self.s = settings or Settings()
        self.pending = 0        # deliveries not yet made (due or leased): the outbox depth
        self.outcomes: dict[str, int] = {"delivered": 0, "retry": 0, "failed": 0}
        self._results: list[dict[str, Any]] = []
        self._inflight = 0
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        lease = int((self.s.timeout + 30) * 1000)
        async with httpx.AsyncClient(timeout=self.s.timeout, follow_redirects=False,
                                     trust_env=False) as http:
            tasks: set[asyncio.Task[None]] = set()
            while not stop.is_set():
                try:
                    await self._flush()
                    wait = await self._round(http, lease, tasks)
                except Problem as exc:  # the engine is away (restarting): try again shortly
                    log.warning("webhook worker: %s", exc.detail)
                    wait = 1.0
                except Exception:
                    log.exception("webhook worker round failed")
                    wait = 1.0
                if wait > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except TimeoutError:
                        pass
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:  # what finished is reported; the rest comes back when its lease runs out
                await self._flush()
            except Exception:
                log.warning("webhook worker: outcomes not reported at stop; they are retried")

    async def _round(self, http: httpx.AsyncClient, lease: int,
                     tasks: set[asyncio.Task[None]]) -> float:
        """Claim what is due and start its POSTs; returns how long to wait before the next."""
        info = await self.backend.call("outbox.next", {}, ACTOR)
        self.pending = int(info["pending"])
        due: int | None = info["due"]
        now = int(time.time() * 1000)
        room = self.s.concurrency - self._inflight
        if due is None or room <= 0:
            return self.s.poll
        if due > now:
            return min(self.s.poll, (due - now) / 1000)
        jobs = await self.backend.call("outbox.claim", {"now_ms": now, "limit": room,
                                                        "lease_ms": lease}, ACTOR)
        for job in jobs:
            self._inflight += 1
            task = asyncio.create_task(self._post(http, job))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return 0.0 if jobs and len(jobs) == room else self.s.poll

    async def _post(self, http: httpx.AsyncClient, job: dict[str, Any]) -> None:
        raw = body(job["event"])
        headers = {"Content-Type": "application/json", "User-Agent": "ocs-webhooks/1",
                   "OCS-Event-Id": job["event"]["id"], "OCS-Event-Type": job["event"]["type"],
                   SIGNATURE: sign(job["secret"], int(time.time()), raw)}
        status, error = 0, ""
        try:
            resp = await http.post(job["url"], content=raw, headers=headers)
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as exc:  # refused, timed out, a URL httpx cannot use: retried
            error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self._inflight -= 1
        self._results.append({"subscription": job["subscription"], "position": job["position"],
                              "ok": not error, "status": status, "error": error,
                              "now_ms": int(time.time() * 1000)})
        self._wake.set()

    async def _flush(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            states = await self.backend.call(
                "outbox.report", {"outcomes": batch, "base_ms": int(self.s.backoff_base * 1000)},
                ACTOR)
        except BaseException:
            self._results[:0] = batch
            raise
        for o, state in zip(batch, states, strict=True):
            if state == "delivered":
                self.outcomes["delivered"] += 1
            elif state == "failed":
                self.outcomes["failed"] += 1
                log.warning("webhook %s: event %s gave up after 24 h (%s)", o["subscription"],
                            o["position"], o["error"])
            elif state == "pending":
                self.outcomes["retry"] += 1
