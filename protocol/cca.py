"""Credit-Control-Answer: template encode (the hot path) and flat-scan decode for clients/tests."""

from __future__ import annotations

import struct
from typing import Any, Final, Literal, overload

from protocol import build as B
from protocol import constants as C
from protocol import scan as S
from protocol.errors import DiameterError
from protocol.formats import ntp_to_unix
from protocol.header import FLAG_ERROR, FLAG_PROXIABLE, FLAG_REQUEST, check_header_fields
from protocol.records import CCA, CostInformation, FinalUnit, MSCCAnswer
from protocol.units import decode_unit_value, decode_units, encode_unit_value, encode_units

_HDR = struct.Struct(">IIIII")
_PACK_HDR = _HDR.pack
_U32, _I32 = S.U32, S.I32
_V3 = C.VENDOR_3GPP << 32
_CMD_P = (FLAG_PROXIABLE << 24) | C.CC_CREDIT_CONTROL
_CMD_PE = ((FLAG_PROXIABLE | FLAG_ERROR) << 24) | C.CC_CREDIT_CONTROL
_u32, _i32, _utf8, _group = B.u32, B.i32, B.utf8, B.group


def _encode_mscc(m: MSCCAnswer) -> bytes:
    p = []
    if m.granted is not None:
        p.append(_group(431, encode_units(m.granted)))
    if m.service_identifier is not None:
        p.append(_u32(439, m.service_identifier))
    if m.rating_group is not None:
        p.append(_u32(432, m.rating_group))
    if m.validity_time is not None:
        p.append(_u32(448, m.validity_time))
    if m.result_code is not None:
        p.append(_u32(268, m.result_code))
    if m.final_unit_action is not None:
        p.append(_encode_fui(m, m.final_unit_action))
    if m.time_quota_threshold is not None:
        p.append(B.u32_3gpp(868, m.time_quota_threshold))
    if m.volume_quota_threshold is not None:
        p.append(B.u32_3gpp(869, m.volume_quota_threshold))
    if m.quota_holding_time is not None:
        p.append(B.u32_3gpp(871, m.quota_holding_time))
    return _group(456, b"".join(p))


def _encode_fui(m: MSCCAnswer | FinalUnit, action: int) -> bytes:
    """`action` is m.final_unit_action, passed as the int the caller checked it is."""
    f = [_i32(449, action)]
    for r in m.restriction_filter_rules:
        f.append(_utf8(438, r))
    for fid in m.filter_ids:
        f.append(_utf8(11, fid))
    if m.redirect_server_address is not None:
        f.append(_group(434, _i32(433, m.redirect_address_type or 0)
                        + _utf8(435, m.redirect_server_address)))
    return _group(430, b"".join(f))


def encode_cca(cca: CCA, hop_by_hop: int, end_to_end: int) -> bytes:
    p = [
        _utf8(263, cca.session_id),
        _u32(268, cca.result_code),
        _utf8(264, cca.origin_host),
        _utf8(296, cca.origin_realm),
        _u32(258, cca.auth_application_id),
        _i32(416, cca.request_type),
        _u32(415, cca.request_number),
    ]
    if cca.granted is not None:
        p.append(_group(431, encode_units(cca.granted)))
    for m in cca.mscc:
        p.append(_encode_mscc(m))
    ci = cca.cost_information
    if ci is not None:
        c = encode_unit_value(ci.value_digits, ci.exponent) + _u32(425, ci.currency_code)
        if ci.cost_unit is not None:
            c += _utf8(424, ci.cost_unit)
        p.append(_group(423, c))
    if cca.final_unit is not None:
        p.append(_encode_fui(cca.final_unit, cca.final_unit.final_unit_action))
    if cca.check_balance_result is not None:
        p.append(_i32(422, cca.check_balance_result))
    if cca.credit_control_failure_handling is not None:
        p.append(_i32(427, cca.credit_control_failure_handling))
    if cca.origin_state_id is not None:
        p.append(_u32(278, cca.origin_state_id))
    if cca.event_timestamp is not None:
        p.append(B.time(55, cca.event_timestamp))
    if cca.validity_time is not None:
        p.append(_u32(448, cca.validity_time))
    if cca.error_message is not None:
        p.append(_utf8(281, cca.error_message, 0))
    if cca.failed_avp is not None:
        p.append(_group(279, cca.failed_avp))
    body = b"".join(p)
    rc = cca.result_code
    return (
        _PACK_HDR(
            0x01000000 | (20 + len(body)),
            _CMD_PE if 3000 <= rc < 4000 else _CMD_P,
            C.APP_CREDIT_CONTROL,
            hop_by_hop,
            end_to_end,
        )
        + body
    )


# --- decode (clients and tests) ---

# Final, so each is its Literal type: _scalar's overloads give the value's type per kind.
_STR: Final = 0
_U: Final = 1
_I: Final = 2
_TIME: Final = 3
_TOP = {
    263: (0, _STR),  # Session-Id
    268: (1, _U),  # Result-Code
    264: (2, _STR),  # Origin-Host
    296: (3, _STR),  # Origin-Realm
    416: (4, _I),  # CC-Request-Type
    415: (5, _U),  # CC-Request-Number
    258: (6, _U),  # Auth-Application-Id
    422: (7, _I),  # Check-Balance-Result
    427: (8, _I),  # Credit-Control-Failure-Handling
    278: (9, _U),  # Origin-State-Id
    281: (10, _STR),  # Error-Message
    55: (11, _TIME),  # Event-Timestamp
    448: (12, _U),  # Validity-Time
}
_REQUIRED = (
    (0, "Session-Id"),
    (1, "Result-Code"),
    (2, "Origin-Host"),
    (3, "Origin-Realm"),
    (4, "CC-Request-Type"),
    (5, "CC-Request-Number"),
)
_MSCC_U32 = {
    268: 0,  # Result-Code
    432: 1,  # Rating-Group
    439: 2,  # Service-Identifier
    448: 4,  # Validity-Time
    871 | _V3: 5,  # Quota-Holding-Time
    868 | _V3: 6,  # Time-Quota-Threshold
    869 | _V3: 7,  # Volume-Quota-Threshold
}


@overload
def _scalar(buf: bytes, key: int, pos: int, d: int, nxt: int, kind: Literal[0]) -> str: ...
@overload
def _scalar(buf: bytes, key: int, pos: int, d: int, nxt: int, kind: Literal[1, 2, 3]) -> int: ...
@overload
def _scalar(buf: bytes, key: int, pos: int, d: int, nxt: int, kind: int) -> str | int: ...
def _scalar(buf: bytes, key: int, pos: int, d: int, nxt: int, kind: int) -> str | int:
    if kind == _STR:
        try:
            return buf[d:nxt].decode()
        except UnicodeDecodeError:
            raise S.bad_value(buf, key, pos, nxt, "not valid UTF-8") from None
    if nxt - d != 4:
        raise S.bad_length(buf, key, pos, nxt, 4)
    if kind == _U:
        return _U32(buf, d)[0]
    if kind == _I:
        return _I32(buf, d)[0]
    return ntp_to_unix(_U32(buf, d)[0])


def decode_cca(frame: bytes) -> CCA:
    n = len(frame)
    if n < 20:
        raise DiameterError(C.DIAMETER_INVALID_MESSAGE_LENGTH, f"frame of {n} bytes is too short")
    vl, fcc, _app, _hbh, _e2e = _HDR.unpack_from(frame)
    flags = fcc >> 24
    check_header_fields(vl >> 24, vl & 0xFFFFFF, flags, n)
    if flags & FLAG_REQUEST:
        raise DiameterError(C.DIAMETER_INVALID_HDR_BITS, "CCA with the R bit")
    if fcc & 0xFFFFFF != C.CC_CREDIT_CONTROL:
        raise DiameterError(C.DIAMETER_COMMAND_UNSUPPORTED, f"command {fcc & 0xFFFFFF} is not a CCA")
    v: list[Any] = [None] * 13
    mscc: list[MSCCAnswer] = []
    gsu = cost = failed = fui = None
    for key, pos, d, nxt in S.split(frame, 20, n):
        ent = _TOP.get(key)
        if ent is not None:
            if v[ent[0]] is not None:
                raise S.occurs_too_many(frame, key, pos, nxt)
            v[ent[0]] = _scalar(frame, key, pos, d, nxt, ent[1])
            continue
        try:
            if key == 456:
                mscc.append(_decode_mscc(frame, d, nxt))
            elif key == 431:
                if gsu is not None:
                    raise S.occurs_too_many(frame, key, pos, nxt)
                gsu = decode_units(frame, d, nxt)
            elif key == 423:
                if cost is not None:
                    raise S.occurs_too_many(frame, key, pos, nxt)
                cost = _decode_cost(frame, d, nxt)
            elif key == 279:
                failed = bytes(frame[d:nxt])
            elif key == 430:
                if fui is not None:
                    raise S.occurs_too_many(frame, key, pos, nxt)
                fui = FinalUnit(0)
                _decode_fui(frame, d, nxt, fui)
            elif key in S.GROUPED:
                S.validate_group(frame, pos, d, nxt)
        except DiameterError as e:
            raise S.wrap(e, frame, pos, d) from None
    # An answer with the E bit carries only the answer-message AVPs (RFC 6733 §7.2).
    required = _REQUIRED[:4] if flags & FLAG_ERROR else _REQUIRED
    for slot, name in required:
        if v[slot] is None:
            raise S.missing_avp(name)
    return CCA(
        v[0], v[1], v[2], v[3], v[4] or 0, v[5] or 0, 4 if v[6] is None else v[6], mscc, gsu,
        cost, v[7], v[8], v[9], v[10], failed, v[11], fui, v[12],
    )  # fmt: skip


def _decode_mscc(buf: bytes, d: int, end: int) -> MSCCAnswer:
    m = MSCCAnswer()
    u: list[int | None] = [None] * 8
    for key, pos, dd, nxt in S.split(buf, d, end):
        slot = _MSCC_U32.get(key)
        if slot is not None:
            if u[slot] is not None:
                raise S.occurs_too_many(buf, key, pos, nxt)
            u[slot] = _scalar(buf, key, pos, dd, nxt, _U)
            continue
        try:
            if key == 431:
                if m.granted is not None:
                    raise S.occurs_too_many(buf, key, pos, nxt)
                m.granted = decode_units(buf, dd, nxt)
            elif key == 430:
                if m.final_unit_action is not None:
                    raise S.occurs_too_many(buf, key, pos, nxt)
                _decode_fui(buf, dd, nxt, m)
            elif key in S.GROUPED:
                S.validate_group(buf, pos, dd, nxt)
        except DiameterError as e:
            raise S.wrap(e, buf, pos, dd) from None
    m.result_code, m.rating_group, m.service_identifier = u[0], u[1], u[2]
    m.validity_time, m.quota_holding_time = u[4], u[5]
    m.time_quota_threshold, m.volume_quota_threshold = u[6], u[7]
    return m


def _decode_fui(buf: bytes, d: int, end: int, m: MSCCAnswer | FinalUnit) -> None:
    action = None
    for key, pos, dd, nxt in S.split(buf, d, end):
        if key == 449:
            if action is not None:
                raise S.occurs_too_many(buf, key, pos, nxt)
            action = _scalar(buf, key, pos, dd, nxt, _I)
        elif key == 438:
            m.restriction_filter_rules.append(_scalar(buf, key, pos, dd, nxt, _STR))
        elif key == 11:
            m.filter_ids.append(_scalar(buf, key, pos, dd, nxt, _STR))
        elif key == 434:
            try:
                for k2, p2, d2, n2 in S.split(buf, dd, nxt):
                    if k2 == 433:
                        m.redirect_address_type = _scalar(buf, k2, p2, d2, n2, _I)
                    elif k2 == 435:
                        m.redirect_server_address = _scalar(buf, k2, p2, d2, n2, _STR)
            except DiameterError as e:
                raise S.wrap(e, buf, pos, dd) from None
        elif key in S.GROUPED:
            S.validate_group(buf, pos, dd, nxt)
    if action is None:
        raise S.missing_avp("Final-Unit-Action")
    m.final_unit_action = action


def _decode_cost(buf: bytes, d: int, end: int) -> CostInformation:
    uv = currency = unit = None
    for key, pos, dd, nxt in S.split(buf, d, end):
        if key == 445:
            try:
                uv = decode_unit_value(buf, dd, nxt)
            except DiameterError as e:
                raise S.wrap(e, buf, pos, dd) from None
        elif key == 425:
            currency = _scalar(buf, key, pos, dd, nxt, _U)
        elif key == 424:
            unit = _scalar(buf, key, pos, dd, nxt, _STR)
        elif key in S.GROUPED:
            S.validate_group(buf, pos, dd, nxt)
    if uv is None:
        raise S.missing_avp("Unit-Value")
    if currency is None:
        raise S.missing_avp("Currency-Code")
    return CostInformation(uv[0], uv[1], currency, unit)
