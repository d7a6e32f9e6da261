"""Fast AVP encoders for the hot paths: one struct.pack per fixed-size AVP.

Flags follow the dictionary: M for the AVPs we send (all "must" in RFC 8506 / TS 32.299),
V + vendor 10415 for the 3GPP ones, no M on the base AVPs marked must-not (Error-Message, ...).
"""

from __future__ import annotations

import struct

from protocol.constants import VENDOR_3GPP
from protocol.formats import encode_address, unix_to_ntp

M = 0x40
VM = 0xC0

_II = struct.Struct(">II").pack
_III = struct.Struct(">III").pack
_IIi = struct.Struct(">IIi").pack
_IIQ = struct.Struct(">IIQ").pack
_IIq = struct.Struct(">IIq").pack
_IIII = struct.Struct(">IIII").pack
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
_U32_LEN = (M << 24) | 12
_U64_LEN = (M << 24) | 16
_V_U32_LEN = (VM << 24) | 16


def u32(code: int, value: int, flags: int = M) -> bytes:
    return _III(code, (flags << 24) | 12, value)


def i32(code: int, value: int, flags: int = M) -> bytes:
    return _IIi(code, (flags << 24) | 12, value)


def u64(code: int, value: int, flags: int = M) -> bytes:
    return _IIQ(code, (flags << 24) | 16, value)


def i64(code: int, value: int, flags: int = M) -> bytes:
    return _IIq(code, (flags << 24) | 16, value)


def u32_3gpp(code: int, value: int, flags: int = VM) -> bytes:
    return _IIII(code, (flags << 24) | 16, VENDOR_3GPP, value)


def octets(code: int, data: bytes, flags: int = M) -> bytes:
    n = 8 + len(data)
    return _II(code, (flags << 24) | n) + data + _PAD[n & 3]


def utf8(code: int, text: str, flags: int = M) -> bytes:
    b = text.encode()
    n = 8 + len(b)
    return _II(code, (flags << 24) | n) + b + _PAD[n & 3]


def octets_3gpp(code: int, data: bytes, flags: int = VM) -> bytes:
    n = 12 + len(data)
    return _III(code, (flags << 24) | n, VENDOR_3GPP) + data + _PAD[n & 3]


def utf8_3gpp(code: int, text: str, flags: int = VM) -> bytes:
    return octets_3gpp(code, text.encode(), flags)


def group(code: int, payload: bytes, flags: int = M) -> bytes:
    """payload is already whole padded AVPs, so the group needs no padding of its own."""
    return _II(code, (flags << 24) | (8 + len(payload))) + payload


def group_3gpp(code: int, payload: bytes, flags: int = VM) -> bytes:
    return _III(code, (flags << 24) | (12 + len(payload)), VENDOR_3GPP) + payload


def time(code: int, unix: int, flags: int = M) -> bytes:
    return _III(code, (flags << 24) | 12, unix_to_ntp(unix))


def address(code: int, ip: str, flags: int = M) -> bytes:
    return octets(code, encode_address(ip), flags)


def address_3gpp(code: int, ip: str, flags: int = VM) -> bytes:
    return octets_3gpp(code, encode_address(ip), flags)
