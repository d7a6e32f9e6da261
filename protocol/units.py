"""Service-unit groups (RSU / GSU / USU, RFC 8506 §8.17-8.19) and CC-Money, both directions."""

from __future__ import annotations

import struct
from typing import cast

from protocol import build as B
from protocol import dictionary as D
from protocol import scan as S
from protocol.constants import VENDOR_3GPP
from protocol.errors import DiameterError
from protocol.records import Units

_REPORTING_REASON = 872 | (VENDOR_3GPP << 32)

# key -> (slot, size): slot indexes Units fields in the order of _FIELDS
_U = {
    420: (0, 4),  # CC-Time
    421: (1, 8),  # CC-Total-Octets
    412: (2, 8),  # CC-Input-Octets
    414: (3, 8),  # CC-Output-Octets
    417: (4, 8),  # CC-Service-Specific-Units
    _REPORTING_REASON: (8, -4),  # Enumerated (signed; checked against the dictionary's values)
    452: (9, -4),  # Tariff-Change-Usage
}
# Both Enumerated keys have dictionary values (D.ENUMS), so none of these is None.
_ENUM_VALUES = {
    k: cast(frozenset[int], D.BY_KEY[k].values) for k, (_slot, size) in _U.items() if size == -4
}
_U32, _U64, _I32 = S.U32, S.U64, S.I32
_II = struct.Struct(">II").unpack_from


def decode_units(buf: bytes, d: int, end: int) -> Units:
    """RSU/GSU/USU payload -> Units; checks every member as protocol.scan.split does."""
    v: list[int | None] = [None] * 10
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
        ent = _U.get(key)
        if ent is not None:
            slot, size = ent
            if v[slot] is not None:
                raise S.occurs_too_many(buf, key, p, e)
            if size == 8:
                if e - dd != 8:
                    raise S.bad_length(buf, key, p, e, 8)
                v[slot] = _U64(buf, dd)[0]
            else:
                if e - dd != 4:
                    raise S.bad_length(buf, key, p, e, 4)
                if size == 4:
                    v[slot] = _U32(buf, dd)[0]
                else:  # Enumerated: one of its dictionary values
                    x = v[slot] = _I32(buf, dd)[0]
                    if x not in _ENUM_VALUES[key]:
                        raise S.broken_rule(buf, key, p, e)
        elif key == 413:  # CC-Money
            if v[5] is not None:
                raise S.occurs_too_many(buf, key, p, e)
            try:
                v[5], v[6], v[7] = _money(buf, dd, e)
            except DiameterError as exc:
                raise S.wrap(exc, buf, p, dd) from None
        elif key in S.GROUPED:
            S.validate_group(buf, p, dd, e)
        elif fl & 0x40000000 and key not in S.KNOWN:
            raise S.unsupported(buf, key, p, e)
        p = (e + 3) & -4
    if p > end:
        raise S.fail_at(buf, d, end)
    return Units(*v)


def decode_unit_value(buf: bytes, d: int, end: int) -> tuple[int, int]:
    """Unit-Value ::= { Value-Digits } [ Exponent ] -> (digits, exponent 0 when absent)."""
    digits = exponent = None
    for key, pos, dd, nxt in S.split(buf, d, end):
        if key == 447:
            if digits is not None:
                raise S.occurs_too_many(buf, key, pos, nxt)
            if nxt - dd != 8:
                raise S.bad_length(buf, key, pos, nxt, 8)
            digits = S.I64(buf, dd)[0]
        elif key == 429:
            if exponent is not None:
                raise S.occurs_too_many(buf, key, pos, nxt)
            if nxt - dd != 4:
                raise S.bad_length(buf, key, pos, nxt, 4)
            exponent = _I32(buf, dd)[0]
        elif key in S.GROUPED:
            S.validate_group(buf, pos, dd, nxt)
    if digits is None:
        raise S.missing_avp("Value-Digits")
    return digits, 0 if exponent is None else exponent


def _money(buf: bytes, d: int, end: int) -> tuple[int, int, int | None]:
    """CC-Money ::= { Unit-Value } [ Currency-Code ]."""
    uv = currency = None
    for key, pos, dd, nxt in S.split(buf, d, end):
        if key == 445:
            if uv is not None:
                raise S.occurs_too_many(buf, key, pos, nxt)
            try:
                uv = decode_unit_value(buf, dd, nxt)
            except DiameterError as e:
                raise S.wrap(e, buf, pos, dd) from None
        elif key == 425:
            if currency is not None:
                raise S.occurs_too_many(buf, key, pos, nxt)
            if nxt - dd != 4:
                raise S.bad_length(buf, key, pos, nxt, 4)
            currency = _U32(buf, dd)[0]
        elif key in S.GROUPED:
            S.validate_group(buf, pos, dd, nxt)
    if uv is None:
        raise S.missing_avp("Unit-Value")
    return uv[0], uv[1], currency


def encode_unit_value(digits: int, exponent: int | None) -> bytes:
    p = B.i64(447, digits)
    if exponent is not None:
        p += B.i32(429, exponent)
    return B.group(445, p)


def encode_units(u: Units) -> bytes:
    """The payload of an RSU/GSU/USU group."""
    p = []
    if u.tariff_change_usage is not None:
        p.append(B.i32(452, u.tariff_change_usage))
    if u.time is not None:
        p.append(B.u32(420, u.time))
    if u.money_value_digits is not None:
        m = encode_unit_value(u.money_value_digits, u.money_exponent)
        if u.money_currency_code is not None:
            m += B.u32(425, u.money_currency_code)
        p.append(B.group(413, m))
    if u.total_octets is not None:
        p.append(B.u64(421, u.total_octets))
    if u.input_octets is not None:
        p.append(B.u64(412, u.input_octets))
    if u.output_octets is not None:
        p.append(B.u64(414, u.output_octets))
    if u.service_specific_units is not None:
        p.append(B.u64(417, u.service_specific_units))
    if u.reporting_reason is not None:
        p.append(B.u32_3gpp(872, u.reporting_reason))
    return b"".join(p)
