"""AVP header packing and the Failed-AVP payloads RFC 6733 §7.5 asks for."""

from __future__ import annotations

import struct

from protocol import dictionary
from protocol.formats import MIN_PAYLOAD

AVP_FLAG_VENDOR = 0x80
AVP_FLAG_MANDATORY = 0x40
AVP_FLAG_PROTECTED = 0x20
AVP_FLAGS_RESERVED = 0x1F

_II = struct.Struct(">II")
_III = struct.Struct(">III")
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


def pack_avp(code: int, flags: int, vendor: int, payload: bytes) -> bytes:
    """One AVP with padding; the V flag follows ``vendor`` (non-zero means vendor-specific)."""
    if vendor:
        n = 12 + len(payload)
        return _III.pack(code, ((flags | AVP_FLAG_VENDOR) << 24) | n, vendor) + payload + _PAD[n & 3]
    n = 8 + len(payload)
    return _II.pack(code, ((flags & ~AVP_FLAG_VENDOR) << 24) | n) + payload + _PAD[n & 3]


def pad(n: int) -> bytes:
    return _PAD[n & 3]


def zero_filled(code: int, vendor: int, flags: int | None = None) -> bytes:
    """The AVP header with a zero-filled minimal payload: what Failed-AVP carries for a missing
    AVP, or for one whose length field cannot be trusted."""
    d = dictionary.lookup(code, vendor)
    size = MIN_PAYLOAD.get(d.type, 0) if d is not None else 0
    if flags is None:
        flags = d.flags if d is not None else AVP_FLAG_MANDATORY
    return pack_avp(code, flags & ~AVP_FLAGS_RESERVED, vendor, bytes(size))


def missing(name: str) -> bytes:
    d = dictionary.by_name(name)
    return zero_filled(d.code, d.vendor, d.flags)


def header_as_received(buf: bytes, pos: int, end: int) -> bytes:
    """For an AVP whose length runs past its container or below the header size: its code,
    flags and vendor as received (missing header bytes read as zero) and a zero payload. The
    length field is rewritten to match, so the Failed-AVP stays parseable."""
    raw = bytes(buf[pos : min(pos + 12, end)]).ljust(12, b"\x00")
    code, fl, vendor = _III.unpack(raw)
    flags = fl >> 24
    return zero_filled(code, vendor if flags & AVP_FLAG_VENDOR else 0, flags)


def wrap_group(buf: bytes, pos: int, data_start: int, inner: bytes | None) -> bytes | None:
    """Wrap a nested offending AVP in its enclosing grouped AVP's header (RFC 6733 §7.5)."""
    if inner is None:
        return None
    code, fl = _II.unpack_from(buf, pos)
    flags = fl >> 24
    vendor = _III.unpack_from(buf, pos)[2] if flags & AVP_FLAG_VENDOR else 0
    return pack_avp(code, flags & ~AVP_FLAGS_RESERVED, vendor, inner)
