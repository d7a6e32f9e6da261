"""RFC 6733 §4.2-4.3 data formats: payload bytes <-> Python values, one pair of functions per type.

Fixed-size types reject a wrong payload length with 5014; bad content (invalid UTF-8, an Address
whose length does not match its family) with 5004. The caller attaches the offending AVP.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
_ERA = 1 << 32

_FIXED = {
    "Integer32": struct.Struct(">i"),
    "Integer64": struct.Struct(">q"),
    "Unsigned32": struct.Struct(">I"),
    "Unsigned64": struct.Struct(">Q"),
    "Float32": struct.Struct(">f"),
    "Float64": struct.Struct(">d"),
    "Enumerated": struct.Struct(">i"),
    "Time": struct.Struct(">I"),
}
_TEXT = frozenset({"UTF8String", "DiameterIdentity", "DiameterURI", "IPFilterRule"})

# Minimal payload sizes, for the zero-filled Failed-AVP of a missing AVP (RFC 6733 §7.5).
MIN_PAYLOAD = {t: s.size for t, s in _FIXED.items()} | {"Address": 6}


class LengthError(ValueError):
    """Payload length impossible for the type (-> 5014)."""


class ContentError(ValueError):
    """Payload content invalid for the type (-> 5004)."""


def ntp_to_unix(ntp: int) -> int:
    """RFC 5905 era rule as RFC 6733 §4.3.1 asks: MSB clear means the era starting 2036-02-07."""
    return ntp - NTP_UNIX_OFFSET if ntp & 0x80000000 else ntp + _ERA - NTP_UNIX_OFFSET


def unix_to_ntp(unix: int) -> int:
    ntp = unix + NTP_UNIX_OFFSET
    if ntp >= _ERA:
        ntp -= _ERA
        if ntp & 0x80000000:
            raise ValueError(f"time {unix} is outside the range Time can carry")
    elif not ntp & 0x80000000:
        raise ValueError(f"time {unix} is outside the range Time can carry")
    return ntp


def decode_address(data: bytes) -> str | tuple[int, bytes]:
    if len(data) < 2:
        raise LengthError("Address shorter than its 2-byte family")
    family = (data[0] << 8) | data[1]
    if family == 1:
        if len(data) != 6:
            raise ContentError("IPv4 Address must hold 4 bytes")
        return str(ipaddress.IPv4Address(data[2:]))
    if family == 2:
        if len(data) != 18:
            raise ContentError("IPv6 Address must hold 16 bytes")
        return str(ipaddress.IPv6Address(data[2:]))
    return (family, bytes(data[2:]))


def encode_address(value: str | tuple[int, bytes]) -> bytes:
    if isinstance(value, tuple):
        family, raw = value
        return family.to_bytes(2, "big") + raw
    ip = ipaddress.ip_address(value)
    return (b"\x00\x01" if ip.version == 4 else b"\x00\x02") + ip.packed


def decode_value(avp_type: str, data: bytes) -> Any:
    """Payload -> value. Raises LengthError or ContentError (Grouped is handled by the caller)."""
    s = _FIXED.get(avp_type)
    if s is not None:
        if len(data) != s.size:
            raise LengthError(f"{avp_type} payload must be {s.size} bytes, not {len(data)}")
        v = s.unpack(data)[0]
        return ntp_to_unix(v) if avp_type == "Time" else v
    if avp_type in _TEXT:
        try:
            return bytes(data).decode()
        except UnicodeDecodeError as e:
            raise ContentError(f"{avp_type} is not valid UTF-8") from e
    if avp_type == "Address":
        return decode_address(data)
    return bytes(data)  # OctetString, Grouped payload


def encode_value(avp_type: str, value: Any) -> bytes:
    s = _FIXED.get(avp_type)
    if s is not None:
        return s.pack(unix_to_ntp(value) if avp_type == "Time" else value)
    if avp_type in _TEXT:
        text: str = value
        return text.encode()
    if avp_type == "Address":
        return encode_address(value)
    return bytes(value)
