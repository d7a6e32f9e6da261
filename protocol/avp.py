"""The generic path: any AVP list <-> a tree of Avp, driven by the dictionary.

Used for tests, the benchmark baseline and the rarely-seen base commands; the CCR/CCA hot path
(protocol.ccr / protocol.cca) scans flat instead. Unknown AVPs stay raw bytes and re-encode unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from protocol import constants as C
from protocol import dictionary
from protocol.errors import DiameterError
from protocol.formats import ContentError, LengthError, decode_value, encode_value
from protocol.wire import (
    AVP_FLAG_MANDATORY,
    AVP_FLAG_VENDOR,
    AVP_FLAGS_RESERVED,
    header_as_received,
    pack_avp,
    wrap_group,
)

MAX_DEPTH = 16  # grouped nesting we follow; deeper is refused (bounded recursion on any input)

_II = struct.Struct(">II").unpack_from
_I = struct.Struct(">I").unpack_from


@dataclass(slots=True)
class Avp:
    code: int
    flags: int = AVP_FLAG_MANDATORY
    vendor: int = 0
    data: bytes = b""
    children: list[Avp] | None = None  # set for known Grouped AVPs

    @property
    def definition(self) -> dictionary.AvpDef | None:
        return dictionary.lookup(self.code, self.vendor)

    @property
    def name(self) -> str | None:
        d = self.definition
        return d.name if d is not None else None

    @property
    def value(self) -> Any:
        """Typed value (children for Grouped, raw bytes when unknown); raises DiameterError."""
        if self.children is not None:
            return self.children
        d = self.definition
        if d is None:
            return self.data
        try:
            return decode_value(d.type, self.data)
        except LengthError as e:
            raise DiameterError(C.DIAMETER_INVALID_AVP_LENGTH, f"{d.name}: {e}", encode_avp(self)) from None
        except ContentError as e:
            raise DiameterError(C.DIAMETER_INVALID_AVP_VALUE, f"{d.name}: {e}", encode_avp(self)) from None

    def find(self, name: str) -> Avp | None:
        return find(self.children or [], name)

    def find_all(self, name: str) -> list[Avp]:
        return find_all(self.children or [], name)


def checked_value(a: Avp) -> Any:
    """``a.value`` held to its dictionary rules (bounds, NUL, enumeration; dictionary.problem):
    DiameterError 5004 with the AVP otherwise. For what a peer asks of us; reading an AVP back
    out of a Failed-AVP (invalid by design) uses ``.value``."""
    v = a.value
    d = a.definition
    if d is not None and a.children is None:
        why = dictionary.problem(d, a.data, v)
        if why is not None:
            raise DiameterError(C.DIAMETER_INVALID_AVP_VALUE, f"{d.name}: {why}", encode_avp(a))
    return v


def make(name: str, value: Any, flags: int | None = None) -> Avp:
    """Build an AVP from the dictionary; ``value`` is a list of Avp for Grouped."""
    d = dictionary.by_name(name)
    f = d.flags if flags is None else flags
    if d.type == "Grouped":
        return Avp(d.code, f, d.vendor, encode_avps(value), list(value))
    return Avp(d.code, f, d.vendor, encode_value(d.type, value))


def find(avps: list[Avp], name: str) -> Avp | None:
    d = dictionary.by_name(name)
    for a in avps:
        if a.code == d.code and a.vendor == d.vendor:
            return a
    return None


def find_all(avps: list[Avp], name: str) -> list[Avp]:
    d = dictionary.by_name(name)
    return [a for a in avps if a.code == d.code and a.vendor == d.vendor]


def decode_avps(buf: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[Avp]:
    """Parse AVPs in buf[start:end], descending into known Grouped AVPs. Checks lengths and
    reserved flag bits; leaves M-bit policy to check_unknown_mandatory."""
    if end is None:
        end = len(buf)
    out: list[Avp] = []
    pos = start
    while pos < end:
        if end - pos < 8:
            raise DiameterError(C.DIAMETER_INVALID_AVP_LENGTH, "truncated AVP header",
                                header_as_received(buf, pos, end))
        code, fl = _II(buf, pos)
        flags, alen = fl >> 24, fl & 0xFFFFFF
        if flags & AVP_FLAG_VENDOR:
            hdr = 12
            vendor = _I(buf, pos + 8)[0] if end - pos >= 12 else 0
        else:
            hdr, vendor = 8, 0
        nxt = pos + alen
        if alen < hdr or nxt > end:
            raise DiameterError(C.DIAMETER_INVALID_AVP_LENGTH,
                                f"AVP {code} length {alen} does not fit its container",
                                header_as_received(buf, pos, end))
        if flags & AVP_FLAGS_RESERVED:
            raise DiameterError(C.DIAMETER_INVALID_AVP_BITS,
                                f"AVP {code} has reserved flag bits set (0x{flags:02x})",
                                bytes(buf[pos:nxt]) + bytes(-alen & 3))
        data = bytes(buf[pos + hdr : nxt])
        children = None
        if (code | (vendor << 32)) in dictionary.GROUPED_KEYS:
            if depth >= MAX_DEPTH:
                raise DiameterError(C.DIAMETER_INVALID_AVP_VALUE,
                                    f"grouped AVPs nested deeper than {MAX_DEPTH}",
                                    pack_avp(code, flags, vendor, b""))
            try:
                children = decode_avps(buf, pos + hdr, nxt, depth + 1)
            except DiameterError as e:
                e.failed_avp = wrap_group(buf, pos, pos + hdr, e.failed_avp)
                raise
        out.append(Avp(code, flags, vendor, data, children))
        pos = nxt + (-alen & 3)
        if pos > end:  # padding of the last AVP in a group runs past the group's end
            raise DiameterError(C.DIAMETER_INVALID_AVP_LENGTH,
                                f"AVP {code} padding runs past its container",
                                header_as_received(buf, nxt - alen, end))
    return out


def encode_avp(avp: Avp) -> bytes:
    payload = encode_avps(avp.children) if avp.children is not None else avp.data
    return pack_avp(avp.code, avp.flags, avp.vendor, payload)


def encode_avps(avps: list[Avp]) -> bytes:
    return b"".join([encode_avp(a) for a in avps])


def check_unknown_mandatory(avps: list[Avp]) -> None:
    """5001 for the first AVP we do not know that carries the M bit (RFC 6733 §4.1)."""
    for a in avps:
        if a.flags & AVP_FLAG_MANDATORY and a.definition is None:
            raise DiameterError(C.DIAMETER_AVP_UNSUPPORTED,
                                f"unsupported AVP {a.code} (vendor {a.vendor}) with the M bit",
                                encode_avp(a))
        if a.children is not None:
            try:
                check_unknown_mandatory(a.children)
            except DiameterError as e:
                e.failed_avp = pack_avp(a.code, a.flags, a.vendor, e.failed_avp or b"")
                raise
