"""The 20-byte Diameter message header (RFC 6733 §3)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocol import constants as C
from protocol.errors import DiameterError

HEADER_LEN = 20
FLAG_REQUEST = 0x80
FLAG_PROXIABLE = 0x40
FLAG_ERROR = 0x20
FLAG_RETRANSMIT = 0x10
FLAGS_RESERVED = 0x0F

HEADER_STRUCT = struct.Struct(">IIIII")


@dataclass(slots=True, frozen=True)
class Header:
    version: int
    length: int
    flags: int
    command_code: int
    application_id: int
    hop_by_hop: int
    end_to_end: int

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & FLAG_PROXIABLE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def is_retransmit(self) -> bool:
        return bool(self.flags & FLAG_RETRANSMIT)


def check_header_fields(version: int, length: int, flags: int, n: int) -> None:
    """Raise the RFC 6733 error for a bad version, length or flag combination."""
    if version != 1:
        raise DiameterError(C.DIAMETER_UNSUPPORTED_VERSION, f"unsupported Diameter version {version}")
    if length != n or length < HEADER_LEN or length & 3:
        raise DiameterError(
            C.DIAMETER_INVALID_MESSAGE_LENGTH,
            f"message length field {length} does not match the {n} bytes of the frame"
            if length != n
            else f"message length {length} is not a multiple of 4 of at least 20",
        )
    if flags & FLAGS_RESERVED:
        raise DiameterError(C.DIAMETER_INVALID_HDR_BITS, f"reserved header flag bits set: 0x{flags:02x}")
    if flags & FLAG_REQUEST and flags & FLAG_ERROR:
        raise DiameterError(C.DIAMETER_INVALID_HDR_BITS, "E bit set on a request")


def decode_header(frame: bytes) -> Header:
    """Decode and validate the header of one complete frame (as given by the Framer)."""
    n = len(frame)
    if n < HEADER_LEN:
        raise DiameterError(
            C.DIAMETER_INVALID_MESSAGE_LENGTH, f"frame of {n} bytes is shorter than a header"
        )
    vl, fcc, app, hbh, e2e = HEADER_STRUCT.unpack_from(frame)
    version, length, flags = vl >> 24, vl & 0xFFFFFF, fcc >> 24
    check_header_fields(version, length, flags, n)
    return Header(version, length, flags, fcc & 0xFFFFFF, app, hbh, e2e)


def encode_header(
    length: int, flags: int, command_code: int, application_id: int, hop_by_hop: int, end_to_end: int
) -> bytes:
    return HEADER_STRUCT.pack(
        (1 << 24) | length, (flags << 24) | command_code, application_id, hop_by_hop, end_to_end
    )


def peek_header(frame: bytes) -> Header:
    """The header fields without validation, for answering a frame decode_header rejected
    (the Framer guarantees at least 20 bytes)."""
    vl, fcc, app, hbh, e2e = HEADER_STRUCT.unpack_from(frame)
    return Header(vl >> 24, vl & 0xFFFFFF, fcc >> 24, fcc & 0xFFFFFF, app, hbh, e2e)
