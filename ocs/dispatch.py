"""From a decoded CCR to its answer on the wire: admission, per-session order, group commit, replay.

Requests of one session are applied one at a time in arrival order (some gateways send several
CCR-Us of a session without waiting); requests of different sessions go to the writer together and
share its durable commits. A request beyond the in-flight bounds is answered DIAMETER_TOO_BUSY at
once, so latency stays bounded and one peer cannot take the whole server (per-peer bound).
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from ocs import credit, metrics
from protocol import constants as C
from protocol.answer import encode_error_answer, with_proxy_info
from protocol.ccr import decode_ccr
from protocol.errors import DiameterError
from protocol.header import Header

log = logging.getLogger("ocs.dispatch")

_IDS = struct.Struct(">II")
_AVP_HEAD = struct.Struct(">IBBH")  # code, flags, length (24 bits as 8 + 16)
REQUEST_TYPES = {1: "INITIAL", 2: "UPDATE", 3: "TERMINATION", 4: "EVENT"}


class Peer(Protocol):
    in_flight: int
    origin_host: str

    def send(self, data: bytes) -> None: ...

    def drained(self) -> None: ...


def result_code_of(answer: bytes) -> int:
    """The top-level Result-Code of an encoded answer (0 if absent), by a flat scan."""
    pos, end = 20, len(answer)
    while pos + 8 <= end:
        code, flags, hi, lo = _AVP_HEAD.unpack_from(answer, pos)
        length = (hi << 16) | lo
        if length < 8:
            return 0
        if code == 268 and not flags & 0x80:
            return struct.unpack_from(">I", answer, pos + 8)[0]
        pos += (length + 3) & ~3
    return 0


class Dispatcher:
    def __init__(self, cfg, writer, ctx: credit.Context) -> None:  # type: ignore[no-untyped-def]
        self.cfg = cfg
        self.writer = writer
        self.ctx = ctx
        self.in_flight = 0
        self._sessions: dict[str, deque] = {}
        self._idle_waiters: list[Callable[[], None]] = []

    def submit(self, peer: Peer, frame: bytes, header: Header) -> None:
        """Called on the loop thread for each CCR frame of an open peer."""
        cfg = self.cfg
        if self.in_flight >= cfg.max_in_flight or peer.in_flight >= cfg.max_in_flight_per_peer:
            metrics.TOO_BUSY.inc()
            peer.send(encode_error_answer(frame, header, C.DIAMETER_TOO_BUSY, cfg.origin_host,
                                          cfg.origin_realm))
            return
        try:
            ccr = decode_ccr(frame)
        except DiameterError as exc:
            metrics.PROTOCOL_ERRORS.labels(str(exc.result_code)).inc()
            peer.send(encode_error_answer(frame, header, exc.result_code, cfg.origin_host,
                                          cfg.origin_realm, exc.failed_avp, str(exc)))
            return
        self.in_flight += 1
        peer.in_flight += 1
        item = (peer, ccr, time.perf_counter(), frame, header)
        queue = self._sessions.get(ccr.session_id)
        if queue is not None:
            queue.append(item)
            return
        self._sessions[ccr.session_id] = deque()
        self._start(item)

    def _start(self, item) -> None:  # type: ignore[no-untyped-def]
        self.writer.submit_callback(partial(credit.process, ctx=self.ctx, ccr=item[1]),
                                    partial(self._done, item))

    def _done(self, item, answer: bytes | None, exc: BaseException | None) -> None:  # type: ignore[no-untyped-def]
        peer, ccr, t0, frame, header = item
        if isinstance(exc, OSError):
            # Committed but not known to be on disk: a transient error makes the client retransmit,
            # and the retransmission gets the stored answer (a permanent one could make it report
            # the same usage again).
            log.error("session %s request %d: sync failed: %r", ccr.session_id, ccr.request_number, exc)
            answer = encode_error_answer(frame, header, C.DIAMETER_UNABLE_TO_DELIVER,
                                         self.cfg.origin_host, self.cfg.origin_realm)
        elif exc is not None:
            log.error("session %s request %d failed: %r", ccr.session_id, ccr.request_number, exc)
            answer = credit.encode_cca(
                credit.make_cca(ccr, self.cfg, C.DIAMETER_UNABLE_TO_COMPLY, error_message="internal error"),
                ccr.hop_by_hop, ccr.end_to_end)
        else:
            assert answer is not None
            if _IDS.unpack_from(answer, 12) != (ccr.hop_by_hop, ccr.end_to_end):
                answer = answer[:12] + _IDS.pack(ccr.hop_by_hop, ccr.end_to_end) + answer[20:]
            answer = with_proxy_info(answer, frame)
        peer.send(answer)
        self.in_flight -= 1
        peer.in_flight -= 1
        if peer.in_flight == 0:
            peer.drained()
        metrics.count_request("CCR", REQUEST_TYPES.get(ccr.request_type, "OTHER"),
                              result_code_of(answer), time.perf_counter() - t0)
        queue = self._sessions.get(ccr.session_id)
        if queue:
            self._start(queue.popleft())
        else:
            self._sessions.pop(ccr.session_id, None)
        if self.in_flight == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                w()

    def on_idle(self, callback: Callable[[], None]) -> None:
        """Call back once nothing is in flight (for draining at shutdown)."""
        if self.in_flight == 0:
            callback()
        else:
            self._idle_waiters.append(callback)
