"""From a CCR frame to its answer on the wire: admission, per-session order, the engine, replies.

Requests of one session go to the charging engine one at a time in arrival order (some gateways
send several CCR-Us of a session without waiting); requests of different sessions go together and
share the engine's durable commits. A request beyond the in-flight bounds is answered
DIAMETER_TOO_BUSY at once, so latency stays bounded and one peer cannot take the whole server.
The front never decodes a CCR fully: it peeks the Session-Id, and the engine does the rest.
Shedding is logged per episode, not per request: a WARNING when it starts and one when nothing
was shed for OVERLOAD_QUIET_SECONDS, with the count (a server at its bound sheds thousands a second).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from typing import Protocol

from ocs import metrics
from ocs.front.coalesce import Coalescer
from ocs.link import MSG, TOKEN_READY, TOKEN_STATS, split_messages
from protocol import constants as C
from protocol.answer import encode_error_answer
from protocol.ccr import peek_session_id
from protocol.header import Header, peek_header

log = logging.getLogger("ocs.dispatch")

_AVP_HEAD = struct.Struct(">IBBH")  # code, flags, length (24 bits as 8 + 16)
_U32 = struct.Struct(">I")
REQUEST_TYPES = {1: "INITIAL", 2: "UPDATE", 3: "TERMINATION", 4: "EVENT"}
OVERLOAD_QUIET_SECONDS = 1.0  # an overload episode ends after this long without shedding


class Peer(Protocol):
    in_flight: int
    origin_host: str

    def send(self, data: bytes) -> None: ...

    def drained(self) -> None: ...


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


class EngineLink(asyncio.Protocol):
    """The front's end of the socketpair to the charging engine."""

    def __init__(self, dispatcher: Dispatcher, on_lost) -> None:  # type: ignore[no-untyped-def]
        self.dispatcher = dispatcher
        self.on_lost = on_lost
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self._buf = bytearray()
        self._writes = Coalescer()
        self._stale_seen = 0

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
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
        if st["stale_closed"] > self._stale_seen:
            metrics.STALE_SESSIONS.inc(st["stale_closed"] - self._stale_seen)
            self._stale_seen = st["stale_closed"]

    def close(self) -> None:
        self._writes.flush()
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write_eof()

    def connection_lost(self, exc) -> None:  # type: ignore[no-untyped-def]
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the charging engine did not start"))
        if not self.closing:
            log.error("the charging engine went away (%r)", exc)
        self.on_lost(self.closing)


class Dispatcher:
    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        self.cfg = cfg
        self.engine: EngineLink | None = None
        self.in_flight = 0
        self.in_flight_bytes = 0
        self._by_host: dict[str, int] = {}  # in flight per Origin-Host, over all its connections
        self._token = 0
        self._pending: dict[int, tuple] = {}
        self._sessions: dict[bytes, deque] = {}
        self._idle_waiters: list = []
        self.stopping = False  # shutting down: admit nothing new
        self.shed = 0            # requests refused TOO_BUSY in the current overload episode
        self._shed_first = self._shed_last = 0.0

    def submit(self, peer: Peer, frame: bytes, header: Header) -> None:
        """Called on the loop thread for each CCR frame of an open peer."""
        cfg = self.cfg
        host = peer.origin_host
        if (self.stopping or self.in_flight >= cfg.max_in_flight
                or self._by_host.get(host, 0) >= cfg.max_in_flight_per_peer
                or self.in_flight_bytes + len(frame) > cfg.max_in_flight_bytes
                or self.engine is None or self.engine.closing):
            metrics.TOO_BUSY.inc()
            if not (self.stopping or self.engine is None or self.engine.closing):
                self._shedding(host, len(frame))
            peer.send(encode_error_answer(frame, header, C.DIAMETER_TOO_BUSY, cfg.origin_host,
                                          cfg.origin_realm))
            return
        self.in_flight += 1
        self.in_flight_bytes += len(frame)
        self._by_host[host] = self._by_host.get(host, 0) + 1
        peer.in_flight += 1
        self._token = token = (self._token + 1) & 0x7FFFFFFF
        key = peek_session_id(frame) or token.to_bytes(4, "big")  # no Session-Id: the engine answers 5005
        item = (peer, frame, key, token, time.perf_counter())
        queue = self._sessions.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._sessions[key] = deque()
        self._start(item)

    def _shedding(self, host: str, size: int) -> None:
        """Count a request refused for load; the first of an episode starts it (one WARNING)."""
        now = time.monotonic()
        self._shed_last = now
        self.shed += 1
        if self.shed > 1:
            return
        self._shed_first = now
        cfg = self.cfg
        if self.in_flight >= cfg.max_in_flight:
            bound = f"{self.in_flight} requests in flight, max_in_flight {cfg.max_in_flight}"
        elif self._by_host.get(host, 0) >= cfg.max_in_flight_per_peer:
            bound = (f"peer {host} has {self._by_host[host]} in flight, "
                     f"max_in_flight_per_peer {cfg.max_in_flight_per_peer}")
        else:
            bound = (f"{self.in_flight_bytes + size} request bytes in flight, "
                     f"max_in_flight_bytes {cfg.max_in_flight_bytes}")
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

    def _start(self, item) -> None:  # type: ignore[no-untyped-def]
        token = item[3]
        self._pending[token] = item
        self.engine.send(token, item[1])  # type: ignore[union-attr]

    def answered(self, token: int, answer: bytes) -> None:
        """The engine's answer (sent after its transaction was durable)."""
        item = self._pending.pop(token, None)
        if item is None:
            return
        peer, frame, key, _token, t0 = item
        peer.send(answer)
        self._done(peer, frame)
        result, rtype = answer_codes(answer)
        metrics.count_request("CCR", REQUEST_TYPES.get(rtype, "OTHER"), result, time.perf_counter() - t0)
        queue = self._sessions.get(key)
        if queue:
            self._start(queue.popleft())
        else:
            self._sessions.pop(key, None)
        if self.in_flight == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                w()

    def fail_all(self, code: int) -> None:
        """The engine is gone: answer everything sent to it or queued for it with `code`."""
        self.engine = None
        items = list(self._pending.values())
        self._pending.clear()
        for queue in self._sessions.values():
            items.extend(queue)
        self._sessions.clear()
        cfg = self.cfg
        for peer, frame, _key, _token, _t0 in items:
            peer.send(encode_error_answer(frame, peek_header(frame), code, cfg.origin_host,
                                          cfg.origin_realm, None, "charging engine unavailable"))
            self._done(peer, frame)
        waiters, self._idle_waiters = self._idle_waiters, []
        for w in waiters:
            w()

    def _done(self, peer: Peer, frame: bytes) -> None:
        """One request of `peer` is answered: release what it held in the bounds."""
        self.in_flight -= 1
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

    def on_idle(self, callback) -> None:  # type: ignore[no-untyped-def]
        """Call back once nothing is in flight (for draining at shutdown)."""
        if self.in_flight == 0:
            callback()
        else:
            self._idle_waiters.append(callback)
