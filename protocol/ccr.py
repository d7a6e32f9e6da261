"""Credit-Control-Request: flat-scan decode to a CCR record (the hot path), and encode for clients.

Only MSCC, RSU/USU and Subscription-Id(-Extension) are descended into for values; every other
grouped AVP (Service-Information, Proxy-Info, ...) is validated and skipped by length.
"""

from __future__ import annotations

import struct
from typing import Any, cast

from protocol import build as B
from protocol import constants as C
from protocol import dictionary as D
from protocol import scan as S
from protocol.errors import DiameterError
from protocol.formats import ntp_to_unix
from protocol.header import FLAG_PROXIABLE, FLAG_REQUEST, FLAG_RETRANSMIT, check_header_fields
from protocol.records import CCR, MSCCRequest, Units
from protocol.units import decode_units, encode_units

_HDR = struct.Struct(">IIIII")
_HDR_UNPACK = _HDR.unpack_from
_II = struct.Struct(">II").unpack_from
_KNOWN, _GROUPED = S.KNOWN, S.GROUPED
_REPORTING_REASON = 872 | (C.VENDOR_3GPP << 32)
_U32, _I32 = S.U32, S.I32

# key -> slot for single-occurrence top-level AVPs: text first, then 4-byte integers
_TOP_SLOT = {
    263: 0,  # Session-Id
    264: 1,  # Origin-Host
    296: 2,  # Origin-Realm
    283: 3,  # Destination-Realm
    293: 4,  # Destination-Host
    461: 5,  # Service-Context-Id
    1: 6,  # User-Name
    258: 7,  # Auth-Application-Id
    416: 8,  # CC-Request-Type (Enumerated)
    415: 9,  # CC-Request-Number
    436: 10,  # Requested-Action (Enumerated)
    55: 11,  # Event-Timestamp (Time)
    278: 12,  # Origin-State-Id
    295: 13,  # Termination-Cause (Enumerated)
    455: 14,  # Multiple-Services-Indicator (Enumerated)
    439: 15,  # Service-Identifier
}
_FIRST_INT = 7
_NSLOTS = 16
# The dictionary's value rules, laid out per slot for the scan (a few compares per AVP): every text
# slot is 1..max bytes, and the slots before _FIRST_NUL_OK may not hold NUL; (slot, key, accepted
# values) for the Enumerated ones (all signed).
_DEFS = {slot: D.BY_KEY[key] for key, slot in _TOP_SLOT.items()}
_TEXT_MAX = tuple(_DEFS[i].max_len for i in range(_FIRST_INT))
_FIRST_NUL_OK = next(i for i in range(_FIRST_INT) if _DEFS[i].nul_ok)
assert all(_DEFS[i].min_len == 1 for i in range(_FIRST_INT)), "the scan checks 1..max only"
assert all(_DEFS[i].nul_ok == (i >= _FIRST_NUL_OK) for i in range(_FIRST_INT)), "NUL-free first"
_ENUM_SLOTS = tuple(
    (i, d.key, d.values) for i, d in sorted(_DEFS.items()) if d.type == "Enumerated" and d.values
)
# Both are Enumerated with dictionary values (D.ENUMS), so neither is None.
_RR_VALUES = cast(frozenset[int], D.BY_KEY[_REPORTING_REASON].values)
_SUB_TYPE_VALUES = cast(frozenset[int], D.by_name("Subscription-Id-Type").values)
_REQUIRED = (
    (0, "Session-Id"),
    (1, "Origin-Host"),
    (2, "Origin-Realm"),
    (3, "Destination-Realm"),
    (7, "Auth-Application-Id"),
    (5, "Service-Context-Id"),
    (8, "CC-Request-Type"),
    (9, "CC-Request-Number"),
)
_SUB_EXT_TYPES = {660: 0, 661: 1, 662: 2, 663: 3, 664: 4}
_SUB_DATA_RULE = {t: D.BY_KEY[k] for k, t in _SUB_EXT_TYPES.items()}  # type -> its member's rule
_SUB_DATA_BOUNDS = {t: (d.min_len, d.max_len, d.nul_ok) for t, d in _SUB_DATA_RULE.items()}


def decode_ccr(frame: bytes, strict: bool = False) -> CCR:
    """Decode a CCR frame (from the Framer) to a record; raises DiameterError.

    Every AVP we pass over is checked (length, reserved bits, unknown with M bit) at top level and
    inside MSCC / RSU / USU / Subscription-Id; grouped AVPs we do not read (Service-Information,
    Proxy-Info, ...) are skipped by length unless ``strict``, which validates them to any depth.
    """
    n = len(frame)
    if n < 20:
        raise DiameterError(C.DIAMETER_INVALID_MESSAGE_LENGTH, f"frame of {n} bytes is too short")
    vl, fcc, app, hbh, e2e = _HDR_UNPACK(frame)
    flags = fcc >> 24
    if vl != 0x01000000 | n or flags & 0xAF != 0x80:
        check_header_fields(vl >> 24, vl & 0xFFFFFF, flags, n)
        if not flags & FLAG_REQUEST:
            raise DiameterError(C.DIAMETER_INVALID_HDR_BITS, "CCR without the R bit")
    if fcc & 0xFFFFFF != C.CC_CREDIT_CONTROL:
        raise DiameterError(C.DIAMETER_COMMAND_UNSUPPORTED, f"command {fcc & 0xFFFFFF} is not a CCR")
    if app != C.APP_CREDIT_CONTROL:
        raise DiameterError(C.DIAMETER_APPLICATION_UNSUPPORTED, f"application id {app} is not 4")

    v: list[Any] = [None] * _NSLOTS
    mscc: list[MSCCRequest] = []
    used: list[Units] = []
    subs: list[tuple[int, str]] = []
    rsu = None
    top, text_max, first_nul_ok = _TOP_SLOT, _TEXT_MAX, _FIRST_NUL_OK
    p = 20
    while p < n:
        if n - p < 8:
            raise S.fail_at(frame, p, n)
        code, fl = _II(frame, p)
        e = p + (fl & 0xFFFFFF)
        if fl & 0x80000000:
            d = p + 12
            if e < d or e > n or fl & 0x1F000000:
                raise S.fail_at(frame, p, n)
            key = code | (_U32(frame, p + 8)[0] << 32)
        else:
            d = p + 8
            if e < d or e > n or fl & 0x1F000000:
                raise S.fail_at(frame, p, n)
            key = code
        slot = top.get(key)
        if slot is not None:
            if v[slot] is not None:
                raise S.occurs_too_many(frame, key, p, e)
            if slot < _FIRST_INT:
                try:
                    t = frame[d:e].decode()
                except UnicodeDecodeError:
                    raise S.bad_value(frame, key, p, e, "not valid UTF-8") from None
                if e == d or e - d > text_max[slot] or (slot < first_nul_ok and "\0" in t):
                    raise S.broken_rule(frame, key, p, e)
                v[slot] = t
            elif e - d == 4:
                v[slot] = _U32(frame, d)[0]
            else:
                raise S.bad_length(frame, key, p, e, 4)
        elif key == 456:
            try:
                mscc.append(_mscc(frame, d, e))
            except DiameterError as exc:
                raise S.wrap(exc, frame, p, d) from None
        elif key == 443 or key == 659:
            try:
                subs.append(_subscription(frame, d, e, key))
            except DiameterError as exc:
                raise S.wrap(exc, frame, p, d) from None
        elif key == 446 or key == 437:
            try:
                u = decode_units(frame, d, e)
            except DiameterError as exc:
                raise S.wrap(exc, frame, p, d) from None
            if key == 446:
                used.append(u)
            elif rsu is None:
                rsu = u
            else:
                raise S.occurs_too_many(frame, key, p, e)
        elif key in _GROUPED:
            if strict:
                S.validate_group(frame, p, d, e)
        elif fl & 0x40000000 and key not in _KNOWN:
            raise S.unsupported(frame, key, p, e)
        p = (e + 3) & -4

    for slot, name in _REQUIRED:
        if v[slot] is None:
            raise S.missing_avp(name)
    for slot, key, values in _ENUM_SLOTS:
        x = v[slot]
        if x is not None:
            if x & 0x80000000:
                x = v[slot] = x - 0x100000000
            if x not in values:
                raise _broken_rule_top(frame, key)
    ts = v[11]
    return CCR(
        v[0], v[1], v[2], v[3], v[4], v[7], v[5], v[8], v[9], v[10],
        None if ts is None else ntp_to_unix(ts), subs, v[6],
        v[12], v[13], v[14], v[15], rsu, used, mscc, hbh, e2e, bool(flags & FLAG_RETRANSMIT),
    )  # fmt: skip


def _broken_rule_top(frame: bytes, key: int) -> DiameterError:
    """As scan.broken_rule for a top-level AVP the scan has passed (found again: errors only)."""
    for k, pos, _d, nxt in S.split(frame, 20, len(frame)):
        if k == key:
            return S.broken_rule(frame, key, pos, nxt)
    raise AssertionError(f"AVP {key} not found again")  # pragma: no cover - the scan saw it


def _mscc(buf: bytes, d: int, end: int) -> MSCCRequest:
    rg = rr = rsu = None
    sids: list[int] = []
    used: list[Units] = []
    p = d
    while p < end:
        if end - p < 8:
            raise S.fail_at(buf, p, end)
        code, fl = _II(buf, p)
        e = p + (fl & 0xFFFFFF)
        if fl & 0x80000000:
            dd = p + 12
            if e < dd or e > end or fl & 0x1F000000:
                raise S.fail_at(buf, p, end)
            key = code | (_U32(buf, p + 8)[0] << 32)
        else:
            dd = p + 8
            if e < dd or e > end or fl & 0x1F000000:
                raise S.fail_at(buf, p, end)
            key = code
        if key == 446 or key == 437:
            try:
                u = decode_units(buf, dd, e)
            except DiameterError as exc:
                raise S.wrap(exc, buf, p, dd) from None
            if key == 446:
                used.append(u)
            elif rsu is None:
                rsu = u
            else:
                raise S.occurs_too_many(buf, key, p, e)
        elif key == 432 or key == 439 or key == _REPORTING_REASON:
            if e - dd != 4:
                raise S.bad_length(buf, key, p, e, 4)
            if key == 432:
                if rg is not None:
                    raise S.occurs_too_many(buf, key, p, e)
                rg = _U32(buf, dd)[0]
            elif key == 439:
                sids.append(_U32(buf, dd)[0])
            else:
                if rr is not None:
                    raise S.occurs_too_many(buf, key, p, e)
                rr = _I32(buf, dd)[0]
                if rr not in _RR_VALUES:
                    raise S.broken_rule(buf, key, p, e)
        elif key in _GROUPED:
            S.validate_group(buf, p, dd, e)
        elif fl & 0x40000000 and key not in _KNOWN:
            raise S.unsupported(buf, key, p, e)
        p = (e + 3) & -4
    if p > end:
        raise S.fail_at(buf, d, end)
    return MSCCRequest(rg, sids, rsu, used, rr)


def _subscription(buf: bytes, d: int, end: int, outer: int) -> tuple[int, str]:
    """Subscription-Id {Type} {Data}, or Subscription-Id-Extension with one typed member.

    The data's bounds are those of the Extension member for its type (an E.164 number is short
    whichever way it comes); the type must be one of Subscription-Id-Type's values."""
    typ: int | None = None
    data: str | None = None
    tpos = tnxt = dpos = dnxt = 0
    for key, pos, dd, nxt in S.split(buf, d, end):
        if outer == 443:
            if key == 450:
                if typ is not None:
                    raise S.occurs_too_many(buf, key, pos, nxt)
                if nxt - dd != 4:
                    raise S.bad_length(buf, key, pos, nxt, 4)
                typ = _I32(buf, dd)[0]
                tpos, tnxt = pos, nxt
                continue
            if key != 444:
                if key in S.GROUPED:
                    S.validate_group(buf, pos, dd, nxt)
                continue
        else:
            t = _SUB_EXT_TYPES.get(key)
            if t is None:
                if key in S.GROUPED:
                    S.validate_group(buf, pos, dd, nxt)
                continue
            if typ is not None:
                raise S.occurs_too_many(buf, key, pos, nxt)
            typ = t
        if data is not None:
            raise S.occurs_too_many(buf, key, pos, nxt)
        try:
            data = buf[dd:nxt].decode()
        except UnicodeDecodeError:
            raise S.bad_value(buf, key, pos, nxt, "not valid UTF-8") from None
        dpos, dnxt = pos, nxt
    if outer == 443:
        if typ is None:
            raise S.missing_avp("Subscription-Id-Type")
        if data is None:
            raise S.missing_avp("Subscription-Id-Data")
        if typ not in _SUB_TYPE_VALUES:
            raise S.broken_rule(buf, 450, tpos, tnxt)
    elif data is None or typ is None:  # an Extension member sets both: typ is None only with data
        raise S.missing_avp("Subscription-Id-E164")
    lo, hi, nul_ok = _SUB_DATA_BOUNDS[typ]
    size = dnxt - dpos - (12 if buf[dpos + 4] & 0x80 else 8)
    if not lo <= size <= hi or (not nul_ok and "\0" in data):
        rule = _SUB_DATA_RULE[typ]
        why = D.problem(rule, data.encode(), None)
        raise S.bad_value(buf, _U32(buf, dpos)[0], dpos, dnxt,
                          f"{why} for a {rule.name[16:]} (type {typ})")
    return typ, data


def encode_mscc_request(m: MSCCRequest) -> bytes:
    p = []
    if m.requested is not None:
        p.append(B.group(437, encode_units(m.requested)))
    for u in m.used:
        p.append(B.group(446, encode_units(u)))
    for sid in m.service_identifiers:
        p.append(B.u32(439, sid))
    if m.rating_group is not None:
        p.append(B.u32(432, m.rating_group))
    if m.reporting_reason is not None:
        p.append(B.u32_3gpp(872, m.reporting_reason))
    return B.group(456, b"".join(p))


def encode_ccr(
    ccr: CCR,
    hop_by_hop: int,
    end_to_end: int,
    retransmit: bool = False,
    extra_avps: bytes = b"",
) -> bytes:
    """Encode a CCR. ``extra_avps`` (already-encoded AVPs, e.g. a Service-Information group)
    go at the end of the message."""
    p = [
        B.utf8(263, ccr.session_id),
        B.utf8(264, ccr.origin_host),
        B.utf8(296, ccr.origin_realm),
        B.utf8(283, ccr.destination_realm),
    ]
    if ccr.destination_host is not None:
        p.append(B.utf8(293, ccr.destination_host))
    p += [
        B.u32(258, ccr.auth_application_id),
        B.utf8(461, ccr.service_context_id),
        B.i32(416, ccr.request_type),
        B.u32(415, ccr.request_number),
    ]
    if ccr.user_name is not None:
        p.append(B.utf8(1, ccr.user_name))
    if ccr.origin_state_id is not None:
        p.append(B.u32(278, ccr.origin_state_id))
    if ccr.event_timestamp is not None:
        p.append(B.time(55, ccr.event_timestamp))
    for typ, data in ccr.subscription_ids:
        p.append(B.group(443, B.i32(450, typ) + B.utf8(444, data)))
    if ccr.termination_cause is not None:
        p.append(B.i32(295, ccr.termination_cause))
    if ccr.requested_action is not None:
        p.append(B.i32(436, ccr.requested_action))
    if ccr.multiple_services_indicator is not None:
        p.append(B.i32(455, ccr.multiple_services_indicator))
    if ccr.service_identifier is not None:
        p.append(B.u32(439, ccr.service_identifier))
    if ccr.requested is not None:
        p.append(B.group(437, encode_units(ccr.requested)))
    for u in ccr.used:
        p.append(B.group(446, encode_units(u)))
    for m in ccr.mscc:
        p.append(encode_mscc_request(m))
    p.append(extra_avps)
    body = b"".join(p)
    flags = FLAG_REQUEST | FLAG_PROXIABLE | (FLAG_RETRANSMIT if retransmit else 0)
    return (
        _HDR.pack(
            (1 << 24) | (20 + len(body)),
            (flags << 24) | C.CC_CREDIT_CONTROL,
            C.APP_CREDIT_CONTROL,
            hop_by_hop,
            end_to_end,
        )
        + body
    )


def peek_session_id(frame: bytes) -> bytes | None:
    """The raw Session-Id of a request, by a scan that stops at it (RFC 6733 §8.8 puts it first),
    without validating the rest: enough to order a session's requests before decoding them."""
    n = len(frame)
    p = 20
    while n - p >= 8:
        code, fl = _PEEK(frame, p)
        length = fl & 0xFFFFFF
        if length < 8 or p + length > n:
            return None
        if code == 263 and not fl & 0x80000000:
            return bytes(frame[p + 8:p + length])
        p += (length + 3) & ~3
    return None


_PEEK = struct.Struct(">II").unpack_from
