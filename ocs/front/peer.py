"""One Diameter peer connection (RFC 6733 §5): capabilities exchange, watchdog, disconnect, dispatch.

The state machine is small: WAIT_CER until a CER is accepted, then OPEN, then CLOSING after a
DPR either way. Answers produced by one pass of the loop are written with one transport.write.
A peer that sends bytes we cannot frame is disconnected; nothing it does reaches other peers.
Each connection that sent a CER logs one line when it opens and one when it ends, with why it
ended (the first reason given wins: a close we start is often followed by the peer's own).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ocs import metrics
from ocs.front.coalesce import Coalescer
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
from protocol.records import CEA, DPA, DPR, DWA, DWR

if TYPE_CHECKING:  # server.py imports this module
    from ocs.front.server import Server

log = logging.getLogger("ocs.peer")

WAIT_CER, OPEN, DISCONNECTING, CLOSING = "WAIT_CER", "OPEN", "DISCONNECTING", "CLOSING"
DRAIN_SECONDS = 5.0  # after a DPR, how long in-flight answers may take before we close anyway
CLOSE_GRACE_SECONDS = 5.0  # a closed connection whose peer does not read what is left is aborted
WRITE_HIGH_WATER = 1 << 20  # answers queued for a peer that does not read: stop reading its requests
MAX_CER_BYTES = 16384  # a real CER is well under 4 KB; a huge one is CPU spent on the loop thread
DISCONNECT_REBOOTING = 0


def _has_credit_control(cer) -> bool:  # type: ignore[no-untyped-def]
    """Does the peer advertise application 4 (or relay everything)? RFC 6733 §5.3, §2.4."""
    apps = set(cer.auth_application_ids) | set(cer.acct_application_ids)
    for _vendor, auth, acct in cer.vendor_specific_application_ids:
        apps.update(a for a in (auth, acct) if a is not None)
    return C.APP_CREDIT_CONTROL in apps or C.APP_RELAY in apps


class PeerConnection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.cfg = server.cfg
        self.state = WAIT_CER
        self.origin_host = ""
        self.in_flight = 0
        self.transport: asyncio.Transport | None = None
        self.framer = Framer(self.cfg.max_message_size)
        self._writes = Coalescer()
        self._last_rx = time.monotonic()
        self._dwr_outstanding = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._hbh = random.getrandbits(32)
        self._on_dpa: Callable[[], None] | None = None
        self._dpa: bytes | None = None  # our DPA, held until this peer's in-flight answers are sent
        self._connected_at = time.monotonic()
        self._lost = False
        self.local_ip = "127.0.0.1"
        self._counted = False  # counted in ocs_peers_connected
        self._reason: str | None = None  # why this connection ends, once we know
        self.address = "?"

    # -- transport callbacks ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        if len(self.server.peers) >= self.cfg.max_connections and not self._evict_a_silent_peer():
            log.warning("connection refused: %d connections open (max_connections)", len(self.server.peers))
            self.state = CLOSING
            transport.abort()
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
        self._arm_watchdog()

    def connection_lost(self, exc) -> None:  # type: ignore[no-untyped-def]
        self._lost = True
        reason = self._reason or ("connection closed by peer" if exc is None else f"connection lost: {exc!r}")
        if self.origin_host:  # a connection that never sent a CER is not a peer yet
            log.info("peer %s closed: %s", self.origin_host, reason)
        elif self.transport is not None:
            log.debug("connection from %s closed before any CER: %s", self.address, reason)
        if self._counted:
            metrics.PEERS.dec()
            self._counted = False
        self.state = CLOSING
        self.server.peers.discard(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._on_dpa is not None:
            self._on_dpa()

    def _evict_a_silent_peer(self) -> bool:
        """At max_connections, make room by dropping the oldest connection still without a CER,
        so sockets that never say who they are cannot lock real peers out."""
        waiting = [p for p in self.server.peers if p.state == WAIT_CER and p.transport is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda p: p._connected_at)
        log.warning("max_connections reached: dropping a connection that sent no CER")
        oldest.why("dropped at max_connections (no CER)")
        oldest.state = CLOSING
        oldest.transport.abort()  # type: ignore[union-attr]
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
            self._last_rx = time.monotonic()
            self._dwr_outstanding = False
        for frame in frames:
            if self.state == CLOSING:
                return
            self._handle(frame)

    # -- sending ----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop pass goes out in one write."""
        self._writes.write(data)

    def drained(self) -> None:
        """Nothing of this peer is in flight any more."""
        if self.state == DISCONNECTING:
            self._finish_disconnect()

    def why(self, reason: str) -> None:
        """Say why this connection ends (logged when it does); the first reason given wins."""
        if self._reason is None:
            self._reason = reason

    def close(self, reason: str | None = None) -> None:
        if reason is not None:
            self.why(reason)
        self._writes.flush()
        self.state = CLOSING
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()  # sends what is queued first; a peer that never reads it is aborted later
            asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self._lost and self.transport is not None:
            log.warning("peer %s: not reading what is left to send, aborting", self.origin_host or "?")
            self.transport.abort()

    def _next_hbh(self) -> int:
        self._hbh = (self._hbh + 1) & 0xFFFFFFFF
        return self._hbh

    # -- message handling -------------------------------------------------------------------------
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
        if not header.is_request:
            self._handle_answer(cmd)
            return
        if cmd == C.CC_CAPABILITIES_EXCHANGE:
            self._handle_cer(frame, header)
        elif cmd == C.CC_DEVICE_WATCHDOG and self.state in (OPEN, DISCONNECTING):
            self.send(encode_dwa(DWA(origin_host=self.cfg.origin_host, origin_realm=self.cfg.origin_realm,
                                     result_code=C.DIAMETER_SUCCESS,
                                     origin_state_id=self.server.origin_state_id),
                                 header.hop_by_hop, header.end_to_end))
        elif self.state == DISCONNECTING:
            self._error(frame, header, C.DIAMETER_UNABLE_TO_DELIVER, None, "disconnecting (DPR received)")
        elif self.state != OPEN:
            self._error(frame, header, C.DIAMETER_UNKNOWN_PEER, None,
                        "capabilities exchange (CER) must come first")
            self.close("error: a request before the CER")
        elif cmd == C.CC_CREDIT_CONTROL:
            if header.application_id != C.APP_CREDIT_CONTROL:
                self._error(frame, header, C.DIAMETER_APPLICATION_UNSUPPORTED)
            else:
                self.server.dispatcher.submit(self, frame, header)
        elif cmd == C.CC_DISCONNECT_PEER:
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
            self.state = DISCONNECTING
            if self.in_flight == 0:
                self._finish_disconnect()
            else:
                asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._finish_disconnect)
        else:
            self._error(frame, header, C.DIAMETER_COMMAND_UNSUPPORTED)

    def _finish_disconnect(self) -> None:
        """After a DPR either way: send our DPA if we owe one, then close."""
        if self.state == CLOSING:
            return
        if self._dpa is not None:
            self.send(self._dpa)
            self._dpa = None
        self.close()

    def _handle_answer(self, cmd: int) -> None:
        if cmd == C.CC_DISCONNECT_PEER and self._on_dpa is not None:
            self.why("shutdown (our DPR answered)")
            if self.in_flight == 0:
                self.close()
            else:  # answers still to come: close when the last one is sent (see drained)
                self.state = DISCONNECTING
                asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._finish_disconnect)
        # DWA: _last_rx was refreshed already; other answers are not expected and are dropped.

    def _handle_cer(self, frame: bytes, header: Header) -> None:
        if len(frame) > MAX_CER_BYTES:
            self._cea(header, C.DIAMETER_UNABLE_TO_COMPLY, f"CER larger than {MAX_CER_BYTES} bytes")
            self.close(f"error: CER larger than {MAX_CER_BYTES} bytes")
            return
        try:
            cer = decode_cer(frame)
        except DiameterError as exc:
            self._error(frame, header, exc.result_code, exc.failed_avp, str(exc))
            self.close(f"error: CER refused ({exc.result_code}: {exc})")
            return
        cfg = self.cfg
        if self.state != WAIT_CER:
            # RFC 6733 §5.6: a CER on an open connection gets a CEA and the connection stays open;
            # it may not turn the connection into another peer's (its in-flight bounds, allowlist)
            if cer.origin_host != self.origin_host:
                self._cea(header, C.DIAMETER_UNKNOWN_PEER, "Origin-Host differs from the first CER")
                self.close(f"error: a second CER with another Origin-Host ({cer.origin_host})")
            else:
                self._cea(header, C.DIAMETER_SUCCESS)
            return
        self.origin_host = cer.origin_host
        if cfg.allowed_peers and cer.origin_host not in cfg.allowed_peers:
            self._cea(header, C.DIAMETER_UNKNOWN_PEER, "peer not in the allowlist")
            self.close("CER refused: not in the allowlist")
            return
        if not _has_credit_control(cer):
            self._cea(header, C.DIAMETER_NO_COMMON_APPLICATION, "no common application")
            self.close("CER refused: no common application")
            return
        self._cea(header, C.DIAMETER_SUCCESS)
        self.state = OPEN
        if not self._counted:
            self._counted = True
            metrics.PEERS.inc()
        log.info("peer %s (%s) open from %s", cer.origin_host, cer.product_name, self.address)

    def _cea(self, header: Header, result: int, message: str | None = None) -> None:
        cfg = self.cfg
        cea = CEA(origin_host=cfg.origin_host, origin_realm=cfg.origin_realm,
                  host_ip_addresses=[self.local_ip], vendor_id=0, product_name=cfg.product_name,
                  origin_state_id=self.server.origin_state_id, supported_vendor_ids=[C.VENDOR_3GPP],
                  auth_application_ids=[C.APP_CREDIT_CONTROL],
                  vendor_specific_application_ids=[(C.VENDOR_3GPP, C.APP_CREDIT_CONTROL, None)],
                  firmware_revision=1, result_code=result, error_message=message)
        self.send(encode_cea(cea, header.hop_by_hop, header.end_to_end))

    # -- watchdog (RFC 3539 via RFC 6733 §5.5) ----------------------------------------------------
    def _arm_watchdog(self) -> None:
        interval = self.cfg.watchdog_interval
        self._watchdog = asyncio.get_running_loop().call_later(interval, self._watchdog_tick)

    def _watchdog_tick(self) -> None:
        if self.state == CLOSING:
            return
        now = time.monotonic()
        idle = now - self._last_rx
        if self.state == WAIT_CER and now - self._connected_at >= self.cfg.watchdog_interval:
            self.close("no CER within the watchdog interval")
            return
        if idle >= self.cfg.watchdog_interval:
            if self._dwr_outstanding:
                log.warning("peer %s: no answer to DWR, closing", self.origin_host)
                self.close("watchdog timeout (no answer to DWR)")
                return
            self._dwr_outstanding = True
            self.send(encode_dwr(DWR(origin_host=self.cfg.origin_host, origin_realm=self.cfg.origin_realm,
                                     origin_state_id=self.server.origin_state_id),
                                 self._next_hbh(), self._next_hbh()))
        self._arm_watchdog()

    # -- shutdown ---------------------------------------------------------------------------------
    def disconnect(self, done: Callable[[], None]) -> None:
        """Send DPR; `done` runs when the peer answers or the connection ends."""
        self.why("shutdown")
        if self.state != OPEN or self.transport is None:
            done()
            return
        self._on_dpa = done
        self.send(encode_dpr(DPR(origin_host=self.cfg.origin_host, origin_realm=self.cfg.origin_realm,
                                 disconnect_cause=DISCONNECT_REBOOTING),
                             self._next_hbh(), self._next_hbh()))
