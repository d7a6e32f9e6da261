"""One Diameter peer connection (RFC 6733 §5): capabilities exchange, watchdog, disconnect, dispatch.

The states and what moves them are data in `ocs.front.peer_states` (RFC 6733 §5.6 and RFC 3539
§3.4.1 quoted there, with where we differ); this module turns bytes and timers into its events,
sets the next state the table gives and runs the action, one method per action. Answers
produced by one pass of the loop are written with one transport.write. A peer that sends bytes
we cannot frame is disconnected; nothing it does reaches other peers. Each connection that sent
a CER logs one line when it opens and one when it ends, with why it ended (the first reason
given wins: a close we start is often followed by the peer's own).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ocs import metrics
from ocs.front.coalesce import Coalescer
from ocs.front.peer_states import (
    Action,
    Event,
    State,
    Watch,
    WatchAction,
    WatchEvent,
    peer_step,
    watchdog_step,
)
from protocol import constants as C
from protocol.answer import encode_error_answer
from protocol.base import (
    decode_cer,
    decode_dpr,
    encode_cea,
    encode_dpa,
    encode_dpr,
    encode_dwa,
    encode_dwr,
)
from protocol.errors import DiameterError
from protocol.framer import Framer
from protocol.header import FLAG_REQUEST, Header, decode_header, peek_header
from protocol.records import CEA, CER, DPA, DPR, DWA, DWR

if TYPE_CHECKING:  # server.py imports this module
    from ocs.front.server import Server

log = logging.getLogger("ocs.peer")

DRAIN_SECONDS = 5.0  # after a DPR, how long in-flight answers may take before we close anyway
CLOSE_GRACE_SECONDS = 5.0  # a closed connection whose peer does not read what is left is aborted
WRITE_HIGH_WATER = 1 << 20  # answers queued for a peer that does not read: stop reading its requests
MAX_CER_BYTES = 16384  # a real CER is well under 4 KB; a huge one is CPU spent on the loop thread
DISCONNECT_REBOOTING = 0
NO_HEADER = Header(1, 0, 0, 0, 0, 0, 0)  # the header argument of events that carry no message


def _has_credit_control(cer: CER) -> bool:
    """Does the peer advertise application 4 (or relay everything)? RFC 6733 §5.3, §2.4."""
    apps = set(cer.auth_application_ids) | set(cer.acct_application_ids)
    for _vendor, auth, acct in cer.vendor_specific_application_ids:
        apps.update(a for a in (auth, acct) if a is not None)
    return C.APP_CREDIT_CONTROL in apps or C.APP_RELAY in apps


@dataclass(slots=True)
class CerVerdict:
    """What Process-CER (RFC 6733 §5.3) made of a CER: accepted (`code` 2001, `cer` set) or
    refused with `code` and the reason the connection ends. The guard decides; the table's
    action (ACCEPT_CER, SEND_CEA, REFUSE_CER) answers."""

    code: int
    cer: CER | None = None
    message: str | None = None       # Error-Message of a refusal
    reason: str = ""                 # why the connection ends, for the log
    failed_avp: bytes | None = None
    unreadable: bool = False         # no CEA from a CER we cannot decode: a plain error answer
    names_peer: bool = False         # a first CER names the peer even when refused (for the log)


class PeerConnection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.cfg = server.cfg
        self.state = State.WAIT_CER
        self.watchdog = Watch.INITIAL
        self.origin_host = ""
        self.in_flight = 0
        self.transport: asyncio.Transport | None = None
        self.framer = Framer(self.cfg.max_message_size)
        self._writes = Coalescer()
        self._last_rx = time.monotonic()
        self._dwr_outstanding = False  # RFC 3539 Pending
        self._watchdog: asyncio.TimerHandle | None = None
        self._hbh = random.getrandbits(32)
        self._on_dpa: Callable[[], None] | None = None
        self._stop_done: Callable[[], None] | None = None  # disconnect()'s callback, for its action
        self._verdict: CerVerdict | None = None  # Process-CER's, for the CER event's action
        self._dpa: bytes | None = None  # our DPA, held until this peer's in-flight answers are sent
        self._connected_at = time.monotonic()
        self._lost = False
        self.local_ip = "127.0.0.1"
        self._counted = False  # counted in ocs_peers_connected
        self._reason: str | None = None  # why this connection ends, once we know
        self.address = "?"

    # -- the state machines -----------------------------------------------------------------------
    def _fire(self, event: Event, frame: bytes = b"", header: Header = NO_HEADER) -> None:
        """One step of the peer table: the next state first, then its action (which may fire
        further events, so it sees the state it moved to)."""
        step = peer_step(self.state, event)
        self.state = step.next
        _ACTIONS[step.action](self, frame, header)

    def _watch(self, event: WatchEvent) -> None:
        """One step of the watchdog table."""
        step = watchdog_step(self.watchdog, event)
        self.watchdog = step.next
        _WATCH_ACTIONS[step.action](self)

    # -- transport callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's is not a subclass of asyncio.Transport, so no isinstance
        self.transport = transport = cast(asyncio.Transport, transport)
        if len(self.server.peers) >= self.cfg.max_connections and not self._evict_a_silent_peer():
            log.warning("connection refused: %d connections open (max_connections)", len(self.server.peers))
            self._fire(Event.ABORT)
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._writes.transport = transport
        sock = transport.get_extra_info("sockname")
        if sock:
            self.local_ip = sock[0]
        peer = transport.get_extra_info("peername")
        if peer:
            self.address = f"{peer[0]}:{peer[1]}"
        self.server.peers.add(self)
        self._watch(WatchEvent.CONNECTION_UP)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        reason = self._reason or ("connection closed by peer" if exc is None else f"connection lost: {exc!r}")
        if self.origin_host:  # a connection that never sent a CER is not a peer yet
            log.info("peer %s closed: %s", self.origin_host, reason)
        elif self.transport is not None:
            log.debug("connection from %s closed before any CER: %s", self.address, reason)
        self._fire(Event.PEER_DISC)

    def _evict_a_silent_peer(self) -> bool:
        """At max_connections, make room by dropping the oldest connection still without a CER,
        so sockets that never say who they are cannot lock real peers out."""
        waiting = [p for p in self.server.peers if p.state is State.WAIT_CER and p.transport is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda p: p._connected_at)
        log.warning("max_connections reached: dropping a connection that sent no CER")
        oldest.why("dropped at max_connections (no CER)")
        oldest._fire(Event.ABORT)
        self.server.peers.discard(oldest)
        return True

    def pause_writing(self) -> None:
        """The peer is not reading its answers: read no more of its requests until it does."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except DiameterError as exc:
            log.warning("peer %s: unframeable stream (%s), closing", self.origin_host or "?", exc)
            self.why(f"error: unframeable stream ({exc})")
            head = self.framer.failed_header
            if head is not None and head[4] & FLAG_REQUEST:  # its header came: answer, then close
                self._error(head, peek_header(head), exc.result_code, None, str(exc))
            else:
                metrics.PROTOCOL_ERRORS.labels(str(exc.result_code)).inc()
            self.close()
            return
        if frames:  # liveness is a whole message, not a byte now and then of one never finished
            self._watch(WatchEvent.RECEIVE)
        for frame in frames:
            if self.state is State.CLOSED:
                return
            self._handle(frame)

    # -- sending ----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop pass goes out in one write."""
        self._writes.write(data)

    def drained(self) -> None:
        """Nothing of this peer is in flight any more."""
        self._fire(Event.DRAINED)

    def why(self, reason: str) -> None:
        """Say why this connection ends (logged when it does); the first reason given wins."""
        if self._reason is None:
            self._reason = reason

    def close(self, reason: str | None = None) -> None:
        if reason is not None:
            self.why(reason)
        self._fire(Event.DISC)

    def _abort_if_open(self) -> None:
        if not self._lost and self.transport is not None:
            log.warning("peer %s: not reading what is left to send, aborting", self.origin_host or "?")
            self.transport.abort()

    def _next_hbh(self) -> int:
        self._hbh = (self._hbh + 1) & 0xFFFFFFFF
        return self._hbh

    # -- message handling: a frame becomes an event -----------------------------------------------
    def _error(self, frame: bytes, header: Header, code: int, failed: bytes | None = None,
               message: str | None = None) -> None:
        metrics.PROTOCOL_ERRORS.labels(str(code)).inc()
        self.send(encode_error_answer(frame, header, code, self.cfg.origin_host, self.cfg.origin_realm,
                                      failed, message))

    def _handle(self, frame: bytes) -> None:
        try:
            header = decode_header(frame)
        except DiameterError as exc:
            if exc.fatal:
                metrics.PROTOCOL_ERRORS.labels(str(exc.result_code)).inc()
                self.close(f"error: bad header ({exc.result_code}: {exc})")
                return
            header = peek_header(frame)
            if header.flags & FLAG_REQUEST:  # answer a bad request (e.g. 3008); drop a bad answer
                self._error(frame, header, exc.result_code, exc.failed_avp, str(exc))
            return
        cmd = header.command_code
        if not header.is_request:  # a DWA refreshed the watchdog already; other answers: dropped
            self._fire(Event.DPA if cmd == C.CC_DISCONNECT_PEER else Event.ANSWER, frame, header)
        elif cmd == C.CC_CAPABILITIES_EXCHANGE:
            self._fire(self._process_cer(frame), frame, header)
        elif cmd == C.CC_DEVICE_WATCHDOG:
            self._fire(Event.DWR, frame, header)
        elif cmd == C.CC_DISCONNECT_PEER:
            self._fire(Event.DPR, frame, header)
        else:
            self._fire(Event.MESSAGE, frame, header)

    def _process_cer(self, frame: bytes) -> Event:
        """Process-CER as a guard: CER or CER_REFUSED, with the verdict its action answers by."""
        if len(frame) > MAX_CER_BYTES:
            return self._verdict_is(CerVerdict(
                C.DIAMETER_UNABLE_TO_COMPLY, message=f"CER larger than {MAX_CER_BYTES} bytes",
                reason=f"error: CER larger than {MAX_CER_BYTES} bytes"))
        try:
            cer = decode_cer(frame)
        except DiameterError as exc:
            return self._verdict_is(CerVerdict(
                exc.result_code, message=str(exc), failed_avp=exc.failed_avp, unreadable=True,
                reason=f"error: CER refused ({exc.result_code}: {exc})"))
        if self.state is not State.WAIT_CER:
            # a CER on an open connection gets a CEA and the connection stays open; it may not
            # turn the connection into another peer's (its in-flight bounds, allowlist)
            if cer.origin_host != self.origin_host:
                return self._verdict_is(CerVerdict(
                    C.DIAMETER_UNKNOWN_PEER, message="Origin-Host differs from the first CER",
                    reason=f"error: a second CER with another Origin-Host ({cer.origin_host})"))
            return self._verdict_is(CerVerdict(C.DIAMETER_SUCCESS, cer))
        allowed = self.cfg.allowed_peers
        if allowed and cer.origin_host not in allowed:
            return self._verdict_is(CerVerdict(
                C.DIAMETER_UNKNOWN_PEER, cer, "peer not in the allowlist",
                "CER refused: not in the allowlist", names_peer=True))
        if not _has_credit_control(cer):
            return self._verdict_is(CerVerdict(
                C.DIAMETER_NO_COMMON_APPLICATION, cer, "no common application",
                "CER refused: no common application", names_peer=True))
        return self._verdict_is(CerVerdict(C.DIAMETER_SUCCESS, cer))

    def _verdict_is(self, verdict: CerVerdict) -> Event:
        self._verdict = verdict
        return Event.CER if verdict.code == C.DIAMETER_SUCCESS else Event.CER_REFUSED

    def _take_verdict(self) -> CerVerdict:
        verdict, self._verdict = self._verdict, None
        assert verdict is not None, "a CER event without Process-CER's verdict"
        return verdict

    def _cea(self, header: Header, result: int, message: str | None = None) -> None:
        cfg = self.cfg
        cea = CEA(origin_host=cfg.origin_host, origin_realm=cfg.origin_realm,
                  host_ip_addresses=[self.local_ip], vendor_id=0, product_name=cfg.product_name,
                  origin_state_id=self.server.origin_state_id, supported_vendor_ids=[C.VENDOR_3GPP],
                  auth_application_ids=[C.APP_CREDIT_CONTROL],
                  vendor_specific_application_ids=[(C.VENDOR_3GPP, C.APP_CREDIT_CONTROL, None)],
                  firmware_revision=1, result_code=result, error_message=message)
        self.send(encode_cea(cea, header.hop_by_hop, header.end_to_end))

    # -- the peer table's actions (ocs.front.peer_states.Action), in table order ------------------
    def _do_nothing(self, frame: bytes, header: Header) -> None:
        pass

    def _accept_cer(self, frame: bytes, header: Header) -> None:
        cer = self._take_verdict().cer
        assert cer is not None
        self.origin_host = cer.origin_host
        self._cea(header, C.DIAMETER_SUCCESS)
        if not self._counted:
            self._counted = True
            metrics.PEERS.inc()
        log.info("peer %s (%s) open from %s", cer.origin_host, cer.product_name, self.address)

    def _send_cea(self, frame: bytes, header: Header) -> None:
        self._take_verdict()
        self._cea(header, C.DIAMETER_SUCCESS)

    def _refuse_cer(self, frame: bytes, header: Header) -> None:
        verdict = self._take_verdict()
        if verdict.names_peer and verdict.cer is not None:
            self.origin_host = verdict.cer.origin_host
        if verdict.unreadable:
            self._error(frame, header, verdict.code, verdict.failed_avp, verdict.message)
        else:
            self._cea(header, verdict.code, verdict.message)
        self.close(verdict.reason)

    def _reject(self, frame: bytes, header: Header) -> None:
        self._error(frame, header, C.DIAMETER_UNKNOWN_PEER, None,
                    "capabilities exchange (CER) must come first")
        self.close("error: a request before the CER")

    def _process(self, frame: bytes, header: Header) -> None:
        if header.command_code != C.CC_CREDIT_CONTROL:
            self._error(frame, header, C.DIAMETER_COMMAND_UNSUPPORTED)
        elif header.application_id != C.APP_CREDIT_CONTROL:
            self._error(frame, header, C.DIAMETER_APPLICATION_UNSUPPORTED)
        else:
            self.server.dispatcher.submit(self, frame, header)

    def _send_dwa(self, frame: bytes, header: Header) -> None:
        self.send(encode_dwa(DWA(origin_host=self.cfg.origin_host, origin_realm=self.cfg.origin_realm,
                                 result_code=C.DIAMETER_SUCCESS,
                                 origin_state_id=self.server.origin_state_id),
                             header.hop_by_hop, header.end_to_end))

    def _hold_dpa(self, frame: bytes, header: Header) -> None:
        try:
            cause: object = decode_dpr(frame).disconnect_cause
        except DiameterError:
            cause = "unreadable"
        self.why(f"DPR received (Disconnect-Cause {cause})")
        # RFC 6733 §5.4: the peer closes once it has our DPA, so the DPA waits for the answers
        # of requests already in flight (their debits are made: the peer must see them); no
        # new request is taken meanwhile. Past DRAIN_SECONDS the DPA goes anyway.
        self._dpa = encode_dpa(DPA(origin_host=self.cfg.origin_host, origin_realm=self.cfg.origin_realm,
                                   result_code=C.DIAMETER_SUCCESS),
                               header.hop_by_hop, header.end_to_end)
        self._wait_drained()

    def _refuse(self, frame: bytes, header: Header) -> None:
        self._error(frame, header, C.DIAMETER_UNABLE_TO_DELIVER, None, "disconnecting (DPR received)")

    def _send_dpr(self, frame: bytes, header: Header) -> None:
        self._on_dpa, self._stop_done = self._stop_done, None
        self.send(encode_dpr(DPR(origin_host=self.cfg.origin_host, origin_realm=self.cfg.origin_realm,
                                 disconnect_cause=DISCONNECT_REBOOTING),
                             self._next_hbh(), self._next_hbh()))

    def _no_dpr(self, frame: bytes, header: Header) -> None:
        done, self._stop_done = self._stop_done, None
        if done is not None:
            done()

    def _drain(self, frame: bytes, header: Header) -> None:
        self.why("shutdown (our DPR answered)")
        self._wait_drained()

    def _wait_drained(self) -> None:
        """In DRAINING: at once if nothing is in flight, else when the last answer is sent
        (drained) or DRAIN_SECONDS from now, whichever comes first."""
        if self.in_flight == 0:
            self._fire(Event.DRAINED)
        else:
            asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._fire, Event.TIMEOUT)

    def _finish(self, frame: bytes, header: Header) -> None:
        if self._dpa is not None:
            self.send(self._dpa)
            self._dpa = None
        self.close()

    def _close_no_cer(self, frame: bytes, header: Header) -> None:
        self.close("no CER within the watchdog interval")

    def _abort(self, frame: bytes, header: Header) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _disc(self, frame: bytes, header: Header) -> None:
        self._writes.flush()
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()  # sends what is queued first; a peer that never reads it is aborted later
            asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, self._abort_if_open)

    def _cleanup(self, frame: bytes, header: Header) -> None:
        if self._counted:
            metrics.PEERS.dec()
            self._counted = False
        self.server.peers.discard(self)
        self._watch(WatchEvent.CONNECTION_DOWN)
        if self._on_dpa is not None:
            self._on_dpa()

    # -- watchdog (RFC 3539 via RFC 6733 §5.5): timer ticks become events -------------------------
    def _watchdog_tick(self) -> None:
        now = time.monotonic()
        if now - self._connected_at >= self.cfg.watchdog_interval:
            self._fire(Event.NO_CER)  # a row in WAIT_CER only
        if self.state is State.CLOSED:
            self._watch(WatchEvent.CONNECTION_DOWN)
            return
        if now - self._last_rx >= self.cfg.watchdog_interval:
            self._watch(WatchEvent.EXPIRED_PENDING if self._dwr_outstanding else WatchEvent.EXPIRED)
            if self.watchdog is Watch.DOWN:
                return
        self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        interval = self.cfg.watchdog_interval
        self._watchdog = asyncio.get_running_loop().call_later(interval, self._watchdog_tick)

    # the watchdog table's actions (ocs.front.peer_states.WatchAction)
    def _watch_nothing(self) -> None:
        pass

    def _set_watchdog(self) -> None:
        self._arm_watchdog()

    def _received(self) -> None:
        self._last_rx = time.monotonic()
        self._dwr_outstanding = False

    def _send_watchdog(self) -> None:
        self._dwr_outstanding = True
        self.send(encode_dwr(DWR(origin_host=self.cfg.origin_host, origin_realm=self.cfg.origin_realm,
                                 origin_state_id=self.server.origin_state_id),
                             self._next_hbh(), self._next_hbh()))

    def _close_connection(self) -> None:
        log.warning("peer %s: no answer to DWR, closing", self.origin_host)
        self.close("watchdog timeout (no answer to DWR)")

    def _stop_timer(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    # -- shutdown ---------------------------------------------------------------------------------
    def disconnect(self, done: Callable[[], None]) -> None:
        """Send DPR (Stop); `done` runs when the peer answers or the connection ends, or at once
        when there is no open peer to disconnect."""
        self.why("shutdown")
        if self.transport is None:
            done()
            return
        self._stop_done = done
        self._fire(Event.STOP)


PeerAction = Callable[[PeerConnection, bytes, Header], None]

_ACTIONS: dict[Action, PeerAction] = {
    Action.NONE: PeerConnection._do_nothing,
    Action.ACCEPT_CER: PeerConnection._accept_cer,
    Action.SEND_CEA: PeerConnection._send_cea,
    Action.REFUSE_CER: PeerConnection._refuse_cer,
    Action.REJECT: PeerConnection._reject,
    Action.PROCESS: PeerConnection._process,
    Action.SEND_DWA: PeerConnection._send_dwa,
    Action.HOLD_DPA: PeerConnection._hold_dpa,
    Action.REFUSE: PeerConnection._refuse,
    Action.SEND_DPR: PeerConnection._send_dpr,
    Action.NO_DPR: PeerConnection._no_dpr,
    Action.DRAIN: PeerConnection._drain,
    Action.FINISH: PeerConnection._finish,
    Action.CLOSE_NO_CER: PeerConnection._close_no_cer,
    Action.ABORT: PeerConnection._abort,
    Action.DISC: PeerConnection._disc,
    Action.CLEANUP: PeerConnection._cleanup,
}

_WATCH_ACTIONS: dict[WatchAction, Callable[[PeerConnection], None]] = {
    WatchAction.NONE: PeerConnection._watch_nothing,
    WatchAction.SET_WATCHDOG: PeerConnection._set_watchdog,
    WatchAction.RECEIVED: PeerConnection._received,
    WatchAction.SEND_WATCHDOG: PeerConnection._send_watchdog,
    WatchAction.CLOSE_CONNECTION: PeerConnection._close_connection,
    WatchAction.STOP: PeerConnection._stop_timer,
}
