"""From a CCR frame to its answer on the wire: admission, per-session order, the engine, replies.

Requests of one session go to the charging engine one at a time in arrival order (some gateways
send several CCR-Us of a session without waiting); requests of different sessions go together and
share the engine's durable commits. A request beyond the in-flight bounds is answered
DIAMETER_TOO_BUSY at once, so latency stays bounded and one peer cannot take the whole server.
The front never decodes a CCR fully: it peeks the Session-Id, and the engine does the rest.
Besides those counts, a request is admitted only if it can be answered within max_queue_ms
(WaitBound): gateways time out in 1-3 s and retransmit, so a deep queue fills with work nobody
waits for any more. Shedding is logged per episode, not per request: a WARNING when it starts
and one when nothing was shed for OVERLOAD_QUIET_SECONDS, with the count (a server at its bound
sheds thousands a second).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from ocs import metrics
from ocs.front.coalesce import Coalescer
from ocs.front.health import Readiness
from ocs.link import MSG, TOKEN_READY, TOKEN_STATS, split_messages
from protocol import constants as C
from protocol.answer import encode_error_answer
from protocol.ccr import peek_session_id
from protocol.header import Header, peek_header

if TYPE_CHECKING:
    from ocs.config import ServeConfig

log = logging.getLogger("ocs.dispatch")

_AVP_HEAD = struct.Struct(">IBBH")  # code, flags, length (24 bits as 8 + 16)
_U32 = struct.Struct(">I")
REQUEST_TYPES = {1: "INITIAL", 2: "UPDATE", 3: "TERMINATION", 4: "EVENT"}
OVERLOAD_QUIET_SECONDS = 1.0  # an overload episode ends after this long without shedding
ADMIT_FLOOR = 256             # in flight never shed by the wait bound (a few engine batches)
SATURATED = 64                # in flight at which the engine is busy flat out: one full batch
RATE_WINDOW_SECONDS = 0.1     # answers are counted over windows this long...
RATE_ALPHA = 0.3              # ...and each window's rate moves the estimate this far
MIN_BUSY_SECONDS = 0.01       # a window busy for less than this gives no rate (noise)


class Peer(Protocol):
    in_flight: int
    origin_host: str

    def send(self, data: bytes) -> None: ...

    def drained(self) -> None: ...


# A request held in the front: (its peer, its frame, its session key, its token, when admitted).
Item = tuple[Peer, bytes, bytes, int, float]


def answer_codes(answer: bytes) -> tuple[int, int]:
    """(Result-Code, CC-Request-Type) of an encoded answer (0 when absent), by a flat scan."""
    result = rtype = 0
    pos, end = 20, len(answer)
    while pos + 8 <= end:
        code, flags, hi, lo = _AVP_HEAD.unpack_from(answer, pos)
        length = (hi << 16) | lo
        if length < 8:
            break
        if not flags & 0x80:
            if code == 268:
                result = _U32.unpack_from(answer, pos + 8)[0]
            elif code == 416:
                rtype = _U32.unpack_from(answer, pos + 8)[0]
        pos += (length + 3) & ~3
    return result, rtype


def result_code_of(answer: bytes) -> int:
    return answer_codes(answer)[0]


@dataclass(slots=True)
class WaitBound:
    """How many requests may be in flight so that a new one waits at most `target` seconds.

    By Little's law the time of a request admitted now is in-flight / answer rate, where the rate
    is what the engine achieves when it has work queued: an EWMA of answers per busy second (some
    request in flight), sampled only in windows that end with at least SATURATED in flight. So
    the rate is the engine's capacity, not the offered load: a quiet period neither drags it down
    nor makes the next burst look like overload. Of that time, `service` (the engine's commit and
    sync of one batch, from its stats) is not queueing: a slow disk makes every answer slower,
    and refusing more would not make it faster. Below ADMIT_FLOOR in flight nothing is shed by
    wait (bursts from idle and the start need no rate; that many drain in a few commits), and
    before any rate is known only the count bounds apply. The result is one number, `cap`,
    recomputed once per window, so the per-request check is a comparison. A peer may hold the
    share of `cap` that max_in_flight_per_peer is of max_in_flight (`peer_cap`), so the count
    bounds' fairness between peers holds under this bound too."""

    target: float           # seconds; 0 = off
    peer_share: float       # max_in_flight_per_peer / max_in_flight, at most 1
    cap: int = 0            # in flight allowed now; 0 = no bound (off, or no rate known yet)
    peer_cap: int = 0       # in flight allowed now per Origin-Host; 0 = no bound
    rate: float = 0.0       # answers per busy second with work queued; 0 = not known yet
    service: float = 0.0    # seconds the engine takes to commit and sync one batch
    answers: int = 0        # in the current window
    busy: float = 0.0       # busy seconds in the current window, until busy_since
    busy_since: float = 0.0
    window_start: float = 0.0

    def answered(self, now: float, in_flight: int) -> None:
        """One answer went out; `in_flight` is what is left. Once per window: a new rate."""
        self.answers += 1
        if now - self.window_start < RATE_WINDOW_SECONDS:
            return
        busy = self.busy + (now - self.busy_since if in_flight else 0.0)
        if self.target > 0 and self.window_start and in_flight >= SATURATED \
                and busy >= MIN_BUSY_SECONDS:
            sample = self.answers / busy
            self.rate = sample if self.rate == 0 else self.rate + RATE_ALPHA * (sample - self.rate)
            self.cap = max(ADMIT_FLOOR, int(self.rate * (self.target + self.service)))
            self.peer_cap = max(ADMIT_FLOOR, int(self.cap * self.peer_share))
        self.answers = 0
        self.busy = 0.0
        self.busy_since = self.window_start = now

    def expected_wait(self, in_flight: int) -> float:
        """Seconds a request admitted now would wait in a queue (0 while the rate is not known)."""
        return max(0.0, in_flight / self.rate - self.service) if self.rate > 0 else 0.0

    def engine_stats(self, batches: int, commit_seconds: float, syncs: int,
                     sync_seconds: float) -> None:
        """The engine's work since its previous stats (about a second): one batch's service."""
        if batches > 0 and syncs > 0:
            sample = commit_seconds / batches + sync_seconds / syncs
            self.service = sample if self.service == 0 else \
                self.service + RATE_ALPHA * (sample - self.service)


class EngineLink(asyncio.Protocol):
    """The front's end of the socketpair to the charging engine."""

    def __init__(self, dispatcher: Dispatcher, on_lost: Callable[[bool], None],
                 readiness: Readiness | None = None) -> None:
        self.dispatcher = dispatcher
        self.on_lost = on_lost
        self.readiness = readiness
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self._buf = bytearray()
        self._writes = Coalescer()
        self._stale_seen = 0
        self._last_stats: dict[str, Any] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's is not a subclass of asyncio.Transport, so no isinstance
        self.transport = transport = cast(asyncio.Transport, transport)
        self._writes.transport = transport

    def send(self, token: int, frame: bytes) -> None:
        """Queue a request; everything queued in one loop pass goes out in one write."""
        self._writes.write(MSG.pack(len(frame), token), frame)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        answered = self.dispatcher.answered
        for token, payload in split_messages(self._buf):
            if token == TOKEN_STATS:
                self._stats(payload)
            elif token == TOKEN_READY:
                if not self.ready.done():
                    self.ready.set_result(None)
            else:
                answered(token, payload)

    def _stats(self, payload: bytes) -> None:
        import msgpack
        st = msgpack.unpackb(payload)
        metrics.BATCH_SIZE.observe(st["last_batch"])
        if st["batches"]:
            metrics.COMMIT_LATENCY.observe(st["commit_seconds"] / st["batches"])
        degraded = bool(st.get("degraded"))
        metrics.STORE_DEGRADED.set(1 if degraded else 0)
        if self.readiness is not None:
            self.readiness.store_degraded = degraded
        last = self._last_stats or st
        self.dispatcher.wait.engine_stats(
            st["batches"] - last["batches"], st["commit_seconds"] - last["commit_seconds"],
            st["syncs"] - last["syncs"], st["sync_seconds"] - last["sync_seconds"])
        self._last_stats = st
        if st["stale_closed"] > self._stale_seen:
            metrics.STALE_SESSIONS.inc(st["stale_closed"] - self._stale_seen)
            self._stale_seen = st["stale_closed"]

    def close(self) -> None:
        self._writes.flush()
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the charging engine did not start"))
        if not self.closing:
            log.error("the charging engine went away (%r)", exc)
        self.on_lost(self.closing)


class Dispatcher:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.engine: EngineLink | None = None
        self.in_flight = 0
        self.in_flight_bytes = 0
        self._by_host: dict[str, int] = {}  # in flight per Origin-Host, over all its connections
        self._token = 0
        self._pending: dict[int, Item] = {}
        self._sessions: dict[bytes, deque[Item]] = {}
        self._idle_waiters: list[Callable[[], None]] = []
        self.stopping = False  # shutting down: admit nothing new
        self.shed = 0            # requests refused TOO_BUSY in the current overload episode
        self._shed_first = self._shed_last = 0.0
        self.wait = WaitBound(cfg.max_queue_ms / 1000,
                              min(1.0, cfg.max_in_flight_per_peer / cfg.max_in_flight))
        metrics.ADMISSION_WAIT.set_function(lambda: self.wait.expected_wait(self.in_flight))

    def submit(self, peer: Peer, frame: bytes, header: Header) -> None:
        """Called on the loop thread for each CCR frame of an open peer."""
        cfg = self.cfg
        host = peer.origin_host
        held = self._by_host.get(host, 0)
        wait = self.wait
        if (self.stopping or self.in_flight >= cfg.max_in_flight
                or held >= cfg.max_in_flight_per_peer
                or self.in_flight_bytes + len(frame) > cfg.max_in_flight_bytes
                or 0 < wait.cap <= self.in_flight or 0 < wait.peer_cap <= held
                or self.engine is None or self.engine.closing):
            metrics.TOO_BUSY.inc()
            if not (self.stopping or self.engine is None or self.engine.closing):
                self._shedding(host, len(frame))
            peer.send(encode_error_answer(frame, header, C.DIAMETER_TOO_BUSY, cfg.origin_host,
                                          cfg.origin_realm))
            return
        now = time.perf_counter()
        if not self.in_flight:
            wait.busy_since = now
        self.in_flight += 1
        self.in_flight_bytes += len(frame)
        self._by_host[host] = held + 1
        peer.in_flight += 1
        self._token = token = (self._token + 1) & 0x7FFFFFFF
        key = peek_session_id(frame) or token.to_bytes(4, "big")  # no Session-Id: the engine answers 5005
        item = (peer, frame, key, token, now)
        queue = self._sessions.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._sessions[key] = deque()
        self._start(item)

    def _shedding(self, host: str, size: int, reason: str | None = None) -> None:
        """Count a request refused for load; the first of an episode starts it (one WARNING)."""
        now = time.monotonic()
        self._shed_last = now
        self.shed += 1
        if self.shed > 1:
            return
        self._shed_first = now
        cfg = self.cfg
        wait = self.wait
        held = self._by_host.get(host, 0)
        if reason is not None:
            bound = reason
        elif self.in_flight >= cfg.max_in_flight:
            bound = f"{self.in_flight} requests in flight, max_in_flight {cfg.max_in_flight}"
        elif held >= cfg.max_in_flight_per_peer:
            bound = (f"peer {host} has {held} in flight, "
                     f"max_in_flight_per_peer {cfg.max_in_flight_per_peer}")
        elif self.in_flight_bytes + size > cfg.max_in_flight_bytes:
            bound = (f"{self.in_flight_bytes + size} request bytes in flight, "
                     f"max_in_flight_bytes {cfg.max_in_flight_bytes}")
        elif 0 < wait.cap <= self.in_flight:
            bound = (f"expected wait {wait.expected_wait(self.in_flight) * 1000:.0f} ms: "
                     f"{self.in_flight} in flight at {wait.rate:.0f} answers/s, commits of "
                     f"{wait.service * 1000:.0f} ms, max_queue_ms {cfg.max_queue_ms}")
        else:
            bound = (f"peer {host} has {held} in flight, its share of the {wait.cap} that "
                     f"max_queue_ms {cfg.max_queue_ms} allows at {wait.rate:.0f} answers/s")
        log.warning("overload: answering DIAMETER_TOO_BUSY (%s)", bound)
        asyncio.get_running_loop().call_later(OVERLOAD_QUIET_SECONDS, self._overload_check)

    def _overload_check(self) -> None:
        quiet = time.monotonic() - self._shed_last
        if self.shed and quiet < OVERLOAD_QUIET_SECONDS:
            asyncio.get_running_loop().call_later(OVERLOAD_QUIET_SECONDS - quiet, self._overload_check)
        else:
            self.end_overload()

    def end_overload(self) -> None:
        """Log the end of the overload episode in progress, if any (also at shutdown)."""
        if self.shed:
            log.warning("overload over: %d requests answered DIAMETER_TOO_BUSY in %.1f s",
                        self.shed, self._shed_last - self._shed_first)
            self.shed = 0

    def _start(self, item: Item) -> None:
        token = item[3]
        self._pending[token] = item
        engine = self.engine  # submit checked it; fail_all empties the queues when it goes
        assert engine is not None, "a request started with no engine"
        engine.send(token, item[1])

    def answered(self, token: int, answer: bytes) -> None:
        """The engine's answer (sent after its transaction was durable)."""
        item = self._pending.pop(token, None)
        if item is None:
            return
        peer, frame, key, _token, t0 = item
        now = time.perf_counter()
        peer.send(answer)
        self._done(peer, frame, now)
        self.wait.answered(now, self.in_flight)
        result, rtype = answer_codes(answer)
        metrics.count_request("CCR", REQUEST_TYPES.get(rtype, "OTHER"), result, now - t0)
        queue = self._sessions.get(key)
        if queue:
            nxt = queue.popleft()
            target = self.wait.target
            if target and now - nxt[4] > target + self.wait.service:
                self._shed_session_queue(key, nxt, queue, now)
            else:
                self._start(nxt)
        else:
            self._sessions.pop(key, None)
        if self.in_flight == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                w()

    def _shed_session_queue(self, key: bytes, first: Item, queue: deque[Item], now: float) -> None:
        """`first` waited in the front longer than max_queue_ms (beyond one engine commit) behind
        its session's previous request: nothing of it reached the engine, so 3004 is still honest. Those queued behind it
        get 3004 too, so the session's requests never reach the engine out of order."""
        cfg = self.cfg
        waited = now - first[4]
        items = [first, *queue]
        self._sessions.pop(key, None)
        for peer, frame, _key, _token, _t0 in items:
            metrics.TOO_BUSY.inc()
            self._shedding(peer.origin_host, len(frame),
                           f"a request waited {waited * 1000:.0f} ms behind its session's previous "
                           f"one, max_queue_ms {cfg.max_queue_ms}")
            peer.send(encode_error_answer(frame, peek_header(frame), C.DIAMETER_TOO_BUSY,
                                          cfg.origin_host, cfg.origin_realm))
            self._done(peer, frame, now)

    def fail_all(self, code: int) -> None:
        """The engine is gone: answer everything sent to it or queued for it with `code`."""
        self.engine = None
        items = list(self._pending.values())
        self._pending.clear()
        for queue in self._sessions.values():
            items.extend(queue)
        self._sessions.clear()
        cfg = self.cfg
        now = time.perf_counter()
        for peer, frame, _key, _token, _t0 in items:
            peer.send(encode_error_answer(frame, peek_header(frame), code, cfg.origin_host,
                                          cfg.origin_realm, None, "charging engine unavailable"))
            self._done(peer, frame, now)
        waiters, self._idle_waiters = self._idle_waiters, []
        for w in waiters:
            w()

    def _done(self, peer: Peer, frame: bytes, now: float) -> None:
        """One request of `peer` is answered: release what it held in the bounds."""
        self.in_flight -= 1
        if not self.in_flight:
            self.wait.busy += now - self.wait.busy_since
        self.in_flight_bytes -= len(frame)
        host = peer.origin_host
        left = self._by_host.get(host, 1) - 1
        if left:
            self._by_host[host] = left
        else:
            self._by_host.pop(host, None)
        peer.in_flight -= 1
        if peer.in_flight == 0:
            peer.drained()

    def on_idle(self, callback: Callable[[], None]) -> None:
        """Call back once nothing is in flight (for draining at shutdown)."""
        if self.in_flight == 0:
            callback()
        else:
            self._idle_waiters.append(callback)
