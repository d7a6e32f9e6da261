"""Pre-encoded CCR templates, patched in place per request.

Each (service, request type) is encoded once with protocol.encode_ccr using placeholder values of
a fixed width; we then locate the bytes that change per request (header ids, the Session-Id's
numeric part, CC-Request-Number, the subscriber's digits, the used units) and a request costs a
bytearray copy and a few struct.pack_into calls.

Session-Ids follow RFC 6733's `<Origin-Host>;<high>;<low>;<optional>`: connection and session
number, then the run id (random per run) as the optional part. The run id is the same for every
request of a run, so it is baked into the templates and costs nothing per request; it is what keeps
a second run against the same server from reusing the first run's Session-Ids (which the server
would rightly answer 5012 "session already exists" or 5002 "unknown session").
"""

from __future__ import annotations

import re
import secrets
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import wire
from bench.workload import (
    ACCOUNT_ID_WIDTH,
    EVENT,
    INITIAL,
    SERVICES,
    TERMINATION,
    UPDATE,
    Service,
    account_id,
)

if TYPE_CHECKING:
    from protocol.records import CCR

AVP_SESSION_ID = 263
AVP_CC_REQUEST_NUMBER = 415
AVP_SUBSCRIPTION_ID = 443
AVP_SUBSCRIPTION_ID_DATA = 444
AVP_USU = 446
UNIT_AVP = {"seconds": wire.AVP_CC_TIME, "octets": wire.AVP_CC_TOTAL_OCTETS,
            "events": wire.AVP_CC_SSU}

SESSION_TAIL_WIDTH = 21          # "HHHHHHHHHH;LLLLLLLLLL"
_PLACEHOLDER_TAIL = "1234567890;0987654321"
_PLACEHOLDER_USED = {"seconds": 0x0BADCAFE, "octets": 0x0BADCAFE0BADCAFE,
                     "events": 0x0BADCAFE0BADCAFE}
_U32 = struct.Struct(">I")
_RUN_ID = re.compile(r"[0-9A-Za-z]{0,32}")


def new_run_id() -> str:
    """8 random hex digits: a fresh one per run, so no two runs share a Session-Id."""
    return secrets.token_hex(4)


def session_tail(conn: int, number: int) -> bytes:
    """The per-session part of the Session-Id: unique per (connection, session number) in a run."""
    return b"%010d;%010d" % (conn, number)


@dataclass(slots=True)
class Template:
    frame: bytes
    session_at: int           # offset of the Session-Id's per-session part (session_tail)
    number_at: int            # offset of CC-Request-Number (Unsigned32)
    subscriber_at: int        # offset of the Subscription-Id-Data digits
    used_at: int              # offset of the USU units value, -1 when the request has no USU
    used_struct: struct.Struct | None

    def render(self, hop_by_hop: int, end_to_end: int, tail: bytes, number: int,
               subscriber: bytes, used: int) -> bytearray:
        buf = bytearray(self.frame)
        struct.pack_into(">II", buf, 12, hop_by_hop, end_to_end)
        buf[self.session_at:self.session_at + SESSION_TAIL_WIDTH] = tail
        _U32.pack_into(buf, self.number_at, number)
        buf[self.subscriber_at:self.subscriber_at + ACCOUNT_ID_WIDTH] = subscriber
        if self.used_struct is not None:
            self.used_struct.pack_into(buf, self.used_at, used)
        return buf


def build_ccr(service: Service, request_type: int, *, origin_host: str, origin_realm: str,
              destination_realm: str, session_id: str, account: str, number: int,
              used: int | None) -> CCR:
    """The CCR record our templates are made of (also used by tests to state the intent)."""
    from protocol.records import CCR, MSCCRequest, Units

    def units(n: int) -> Units:
        if service.unit == "seconds":
            return Units(time=n)
        if service.unit == "octets":
            return Units(total_octets=n)
        return Units(service_specific_units=n)

    requested = units(service.requested) if request_type != TERMINATION else None
    used_list = [units(used)] if used is not None else []
    mscc = MSCCRequest(rating_group=service.rating_group, service_identifiers=[],
                       requested=requested, used=used_list, reporting_reason=None)
    return CCR(
        session_id=session_id, origin_host=origin_host, origin_realm=origin_realm,
        destination_realm=destination_realm, destination_host=None, auth_application_id=4,
        service_context_id=service.context_id, request_type=request_type,
        request_number=number, requested_action=0 if request_type == EVENT else None,
        event_timestamp=None, subscription_ids=[(0, account)], user_name=None,
        origin_state_id=None, termination_cause=1 if request_type == TERMINATION else None,
        multiple_services_indicator=1, service_identifier=None, requested=None, used=[],
        mscc=[mscc], hop_by_hop=0, end_to_end=0, retransmit=False)


def session_id(origin_host: str, tail: str | bytes, run_id: str = "") -> str:
    """The Session-Id a template renders: origin host, the per-session part, the run id if any."""
    if isinstance(tail, bytes):
        tail = tail.decode()
    return f"{origin_host};{tail};{run_id}" if run_id else f"{origin_host};{tail}"


def make_template(service: Service, request_type: int, *, origin_host: str, origin_realm: str,
                  destination_realm: str, run_id: str = "") -> Template:
    from protocol.ccr import encode_ccr

    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id must be up to 32 letters or digits: {run_id!r}")
    has_used = request_type in (UPDATE, TERMINATION)
    placeholder = _PLACEHOLDER_USED[service.unit]
    ccr = build_ccr(service, request_type, origin_host=origin_host, origin_realm=origin_realm,
                    destination_realm=destination_realm,
                    session_id=session_id(origin_host, _PLACEHOLDER_TAIL, run_id),
                    account=account_id(0), number=0x5EED, used=placeholder if has_used else None)
    frame = encode_ccr(ccr, 0, 0)
    sid = wire.find_avp(frame, (AVP_SESSION_ID,))
    num = wire.find_avp(frame, (AVP_CC_REQUEST_NUMBER,))
    sub = wire.find_avp(frame, (AVP_SUBSCRIPTION_ID, AVP_SUBSCRIPTION_ID_DATA))
    if sid is None or num is None or sub is None:
        raise RuntimeError("encoded CCR lacks Session-Id, CC-Request-Number or Subscription-Id")
    tail_at = sid.data + len(origin_host.encode()) + 1
    if frame[tail_at:tail_at + SESSION_TAIL_WIDTH] != _PLACEHOLDER_TAIL.encode():
        raise RuntimeError("Session-Id tail not where expected")
    used_at, used_struct = -1, None
    if has_used:
        usu = wire.find_avp(frame, (wire.AVP_MSCC, AVP_USU, UNIT_AVP[service.unit]))
        if usu is None:
            raise RuntimeError("encoded CCR lacks its USU units")
        used_struct = struct.Struct(">I" if usu.end - usu.data == 4 else ">Q")
        if used_struct.unpack_from(frame, usu.data)[0] != placeholder & (
                0xFFFFFFFF if used_struct.size == 4 else 0xFFFFFFFFFFFFFFFF):
            raise RuntimeError("USU units not where expected")
        used_at = usu.data
    return Template(frame, tail_at, num.data, sub.data, used_at, used_struct)


def make_templates(*, origin_host: str, origin_realm: str, destination_realm: str,
                   run_id: str = "") -> dict[tuple[str, int], Template]:
    """Templates for every (service name, request type) the workload sends; Session-Ids end in
    `;run_id` when one is given (the load generator always gives one, new_run_id())."""
    out = {}
    for service in SERVICES.values():
        kinds = (EVENT,) if service.name == "sms" else (INITIAL, UPDATE, TERMINATION)
        for kind in kinds:
            out[(service.name, kind)] = make_template(
                service, kind, origin_host=origin_host, origin_realm=origin_realm,
                destination_realm=destination_realm, run_id=run_id)
    return out


def cer_frame(origin_host: str, origin_realm: str, hop_by_hop: int = 1) -> bytes:
    from protocol.base import encode_cer
    from protocol.records import CER

    cer = CER(origin_host=origin_host, origin_realm=origin_realm,
              host_ip_addresses=["127.0.0.1"], vendor_id=0, product_name="ocs-bench",
              origin_state_id=1, supported_vendor_ids=[10415], auth_application_ids=[4],
              acct_application_ids=[], vendor_specific_application_ids=[],
              inband_security_ids=[], firmware_revision=1)
    return encode_cer(cer, hop_by_hop, hop_by_hop)
