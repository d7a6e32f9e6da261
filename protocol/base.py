"""Base-protocol peer messages (RFC 6733 §5): CER/CEA, DWR/DWA, DPR/DPA on the generic AVP tree.

They are rare (once per connection or per watchdog interval), so clarity beats speed here.
"""

from __future__ import annotations

from typing import Any

from protocol import constants as C
from protocol.avp import Avp, check_unknown_mandatory, checked_value, encode_avp, make
from protocol.errors import DiameterError
from protocol.header import FLAG_ERROR, FLAG_REQUEST, Header
from protocol.message import Message, decode_message, encode_message
from protocol.records import CEA, CER, DPA, DPR, DWA, DWR
from protocol.wire import missing


def _decode(frame: bytes, command: int, request: bool) -> Message:
    msg = decode_message(frame)
    h = msg.header
    if h.command_code != command:
        raise DiameterError(C.DIAMETER_COMMAND_UNSUPPORTED, f"command {h.command_code} is not {command}")
    if h.is_request != request:
        raise DiameterError(
            C.DIAMETER_INVALID_HDR_BITS, "R bit " + ("missing" if request else "set on an answer")
        )
    check_unknown_mandatory(msg.avps)
    return msg


def _one(msg: Message, name: str, required: bool = False) -> Any:
    found = msg.find_all(name)
    if not found:
        if required:
            raise DiameterError(C.DIAMETER_MISSING_AVP, f"missing {name}", missing(name))
        return None
    if len(found) > 1:
        raise DiameterError(
            C.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, f"{name} occurs more than once", encode_avp(found[1])
        )
    return checked_value(found[0])


def _all(msg: Message, name: str) -> list[Any]:
    return [checked_value(a) for a in msg.find_all(name)]


def _encode(command: int, flags: int, avps: list[Avp], hop_by_hop: int, end_to_end: int) -> bytes:
    return encode_message(
        Message(Header(1, 0, flags, command, C.APP_COMMON, hop_by_hop, end_to_end), avps)
    )


def _answer_flags(result_code: int) -> int:
    return FLAG_ERROR if C.is_protocol_error(result_code) else 0


def _vsai(avps: list[Avp]) -> tuple[int, int | None, int | None]:
    vals: dict[str, Any] = {}
    for a in avps:
        if a.name in ("Vendor-Id", "Auth-Application-Id", "Acct-Application-Id"):
            vals[a.name] = a.value
    if "Vendor-Id" not in vals:
        raise DiameterError(C.DIAMETER_MISSING_AVP, "missing Vendor-Id", missing("Vendor-Id"))
    return vals["Vendor-Id"], vals.get("Auth-Application-Id"), vals.get("Acct-Application-Id")


def _capabilities(msg: Message) -> dict[str, Any]:
    return dict(
        origin_host=_one(msg, "Origin-Host", True),
        origin_realm=_one(msg, "Origin-Realm", True),
        host_ip_addresses=_all(msg, "Host-IP-Address"),
        vendor_id=_one(msg, "Vendor-Id", True),
        product_name=_one(msg, "Product-Name", True),
        origin_state_id=_one(msg, "Origin-State-Id"),
        supported_vendor_ids=_all(msg, "Supported-Vendor-Id"),
        auth_application_ids=_all(msg, "Auth-Application-Id"),
        acct_application_ids=_all(msg, "Acct-Application-Id"),
        vendor_specific_application_ids=[
            _vsai(a.children or []) for a in msg.find_all("Vendor-Specific-Application-Id")
        ],
        inband_security_ids=_all(msg, "Inband-Security-Id"),
        firmware_revision=_one(msg, "Firmware-Revision"),
    )


def _capability_avps(r: CER | CEA) -> list[Avp]:
    avps = [make("Origin-Host", r.origin_host), make("Origin-Realm", r.origin_realm)]
    avps += [make("Host-IP-Address", ip) for ip in r.host_ip_addresses]
    avps += [make("Vendor-Id", r.vendor_id), make("Product-Name", r.product_name)]
    if r.origin_state_id is not None:
        avps.append(make("Origin-State-Id", r.origin_state_id))
    avps += [make("Supported-Vendor-Id", v) for v in r.supported_vendor_ids]
    avps += [make("Auth-Application-Id", v) for v in r.auth_application_ids]
    avps += [make("Inband-Security-Id", v) for v in r.inband_security_ids]
    avps += [make("Acct-Application-Id", v) for v in r.acct_application_ids]
    for vendor, auth, acct in r.vendor_specific_application_ids:
        members = [make("Vendor-Id", vendor)]
        if auth is not None:
            members.append(make("Auth-Application-Id", auth))
        if acct is not None:
            members.append(make("Acct-Application-Id", acct))
        avps.append(make("Vendor-Specific-Application-Id", members))
    if r.firmware_revision is not None:
        avps.append(make("Firmware-Revision", r.firmware_revision))
    return avps


def _error_avps(r: CEA | DWA | DPA) -> list[Avp]:
    avps = []
    if r.error_message is not None:
        avps.append(make("Error-Message", r.error_message))
    if r.failed_avp is not None:
        avps.append(Avp(279, 0x40, 0, r.failed_avp))
    return avps


def _failed(msg: Message) -> bytes | None:
    a = msg.find("Failed-AVP")
    return a.data if a is not None else None


def decode_cer(frame: bytes) -> CER:
    return CER(**_capabilities(_decode(frame, C.CC_CAPABILITIES_EXCHANGE, True)))


def encode_cer(cer: CER, hop_by_hop: int, end_to_end: int) -> bytes:
    return _encode(C.CC_CAPABILITIES_EXCHANGE, FLAG_REQUEST, _capability_avps(cer), hop_by_hop, end_to_end)


def decode_cea(frame: bytes) -> CEA:
    msg = _decode(frame, C.CC_CAPABILITIES_EXCHANGE, False)
    rc = _one(msg, "Result-Code", True)
    if msg.header.is_error:  # answer-message format: the capability AVPs may be absent
        return CEA(rc, _one(msg, "Origin-Host", True), _one(msg, "Origin-Realm", True),
                   error_message=_one(msg, "Error-Message"), failed_avp=_failed(msg))  # fmt: skip
    return CEA(rc, **_capabilities(msg), error_message=_one(msg, "Error-Message"),
               failed_avp=_failed(msg))  # fmt: skip


def encode_cea(cea: CEA, hop_by_hop: int, end_to_end: int) -> bytes:
    avps = [make("Result-Code", cea.result_code), *_capability_avps(cea), *_error_avps(cea)]
    return _encode(C.CC_CAPABILITIES_EXCHANGE, _answer_flags(cea.result_code), avps, hop_by_hop, end_to_end)


def decode_dwr(frame: bytes) -> DWR:
    msg = _decode(frame, C.CC_DEVICE_WATCHDOG, True)
    return DWR(_one(msg, "Origin-Host", True), _one(msg, "Origin-Realm", True),
               _one(msg, "Origin-State-Id"))  # fmt: skip


def encode_dwr(dwr: DWR, hop_by_hop: int, end_to_end: int) -> bytes:
    avps = [make("Origin-Host", dwr.origin_host), make("Origin-Realm", dwr.origin_realm)]
    if dwr.origin_state_id is not None:
        avps.append(make("Origin-State-Id", dwr.origin_state_id))
    return _encode(C.CC_DEVICE_WATCHDOG, FLAG_REQUEST, avps, hop_by_hop, end_to_end)


def decode_dwa(frame: bytes) -> DWA:
    msg = _decode(frame, C.CC_DEVICE_WATCHDOG, False)
    return DWA(_one(msg, "Result-Code", True), _one(msg, "Origin-Host", True),
               _one(msg, "Origin-Realm", True), _one(msg, "Origin-State-Id"),
               _one(msg, "Error-Message"), _failed(msg))  # fmt: skip


def encode_dwa(dwa: DWA, hop_by_hop: int, end_to_end: int) -> bytes:
    avps = [make("Result-Code", dwa.result_code), make("Origin-Host", dwa.origin_host),
            make("Origin-Realm", dwa.origin_realm)]  # fmt: skip
    if dwa.origin_state_id is not None:
        avps.append(make("Origin-State-Id", dwa.origin_state_id))
    avps += _error_avps(dwa)
    return _encode(C.CC_DEVICE_WATCHDOG, _answer_flags(dwa.result_code), avps, hop_by_hop, end_to_end)


def decode_dpr(frame: bytes) -> DPR:
    msg = _decode(frame, C.CC_DISCONNECT_PEER, True)
    return DPR(_one(msg, "Origin-Host", True), _one(msg, "Origin-Realm", True),
               _one(msg, "Disconnect-Cause", True))  # fmt: skip


def encode_dpr(dpr: DPR, hop_by_hop: int, end_to_end: int) -> bytes:
    avps = [make("Origin-Host", dpr.origin_host), make("Origin-Realm", dpr.origin_realm),
            make("Disconnect-Cause", dpr.disconnect_cause)]  # fmt: skip
    return _encode(C.CC_DISCONNECT_PEER, FLAG_REQUEST, avps, hop_by_hop, end_to_end)


def decode_dpa(frame: bytes) -> DPA:
    msg = _decode(frame, C.CC_DISCONNECT_PEER, False)
    return DPA(_one(msg, "Result-Code", True), _one(msg, "Origin-Host", True),
               _one(msg, "Origin-Realm", True), _one(msg, "Error-Message"), _failed(msg))  # fmt: skip


def encode_dpa(dpa: DPA, hop_by_hop: int, end_to_end: int) -> bytes:
    avps = [make("Result-Code", dpa.result_code), make("Origin-Host", dpa.origin_host),
            make("Origin-Realm", dpa.origin_realm), *_error_avps(dpa)]  # fmt: skip
    return _encode(C.CC_DISCONNECT_PEER, _answer_flags(dpa.result_code), avps, hop_by_hop, end_to_end)
