"""The few Diameter byte-level facts the load generator needs, without the full codec.

The client must stay cheap per request: it finds where to patch its templates once (avp_offsets)
and reads each answer with one flat scan (scan_answer) that looks only at the Result-Codes and the
granted units of the first MSCC, instead of decoding the whole CCA into records.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

HEADER_LEN = 20
FLAG_REQUEST = 0x80
AVP_FLAG_VENDOR = 0x80

CMD_CER = 257
CMD_CCR = 272
CMD_DWR = 280
CMD_DPR = 282

AVP_RESULT_CODE = 268
AVP_MSCC = 456
AVP_GSU = 431
AVP_RATING_GROUP = 432
AVP_CC_TIME = 420
AVP_CC_TOTAL_OCTETS = 421
AVP_CC_SSU = 417

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_AVP_HDR = struct.Struct(">II")


def frame_length(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """Message length from the header at `pos` (needs 4 bytes)."""
    return (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]


@dataclass(slots=True, frozen=True)
class AvpAt:
    code: int
    vendor: int
    start: int       # offset of the AVP header in the frame
    data: int        # offset of the payload
    end: int         # offset just past the payload (padding excluded)


def iter_avps(frame: bytes, start: int = HEADER_LEN, end: int | None = None) -> Iterator[AvpAt]:
    """AVPs at one nesting level between start and end; stops quietly at a truncated AVP."""
    end = len(frame) if end is None else end
    pos = start
    while pos + 8 <= end:
        code, flags_len = _AVP_HDR.unpack_from(frame, pos)
        flags, length = flags_len >> 24, flags_len & 0xFFFFFF
        if length < 8 or pos + length > end:
            return
        if flags & AVP_FLAG_VENDOR:
            vendor = _U32.unpack_from(frame, pos + 8)[0]
            data = pos + 12
        else:
            vendor, data = 0, pos + 8
        yield AvpAt(code, vendor, pos, data, pos + length)
        pos += (length + 3) & ~3


def find_avp(frame: bytes, path: tuple[int, ...], start: int = HEADER_LEN,
             end: int | None = None) -> AvpAt | None:
    """First AVP reached by the code path (outer to inner), e.g. (456, 446, 421)."""
    for avp in iter_avps(frame, start, end):
        if avp.code == path[0]:
            if len(path) == 1:
                return avp
            found = find_avp(frame, path[1:], avp.data, avp.end)
            if found is not None:
                return found
    return None


def scan_answer(frame: bytes) -> tuple[int, int, int]:
    """(Result-Code, first MSCC's Result-Code or 0, first MSCC's granted units or -1).

    Granted units are whichever of CC-Time / CC-Total-Octets / CC-Service-Specific-Units the GSU
    holds; -1 means no GSU in the answer. One loop over the top level, the first MSCC and its GSU
    (the client calls this per answer, so it allocates nothing per AVP).
    """
    result = mscc_result = 0
    granted = -1
    pos = HEADER_LEN
    end = len(frame)
    mscc_end = gsu_end = -1       # > pos while inside the first MSCC / its GSU
    seen_mscc = False
    unpack_hdr = _AVP_HDR.unpack_from
    while pos + 8 <= end:
        code, flags_len = unpack_hdr(frame, pos)
        length = flags_len & 0xFFFFFF
        if length < 8 or pos + length > end:
            break
        data = pos + (12 if flags_len & 0x80000000 else 8)
        nxt = pos + ((length + 3) & ~3)
        if pos < gsu_end:                                    # inside the GSU
            if code == AVP_CC_TIME and length - (data - pos) == 4:
                granted = _U32.unpack_from(frame, data)[0]
            elif code in (AVP_CC_TOTAL_OCTETS, AVP_CC_SSU) and \
                    length - (data - pos) == 8:
                granted = _U64.unpack_from(frame, data)[0]
        elif pos < mscc_end:                                 # inside the first MSCC
            if code == AVP_RESULT_CODE:
                mscc_result = _U32.unpack_from(frame, data)[0]
            elif code == AVP_GSU:
                granted = 0
                gsu_end = pos + length
                nxt = data                                   # descend
        elif code == AVP_RESULT_CODE:
            result = _U32.unpack_from(frame, data)[0]
        elif code == AVP_MSCC and not seen_mscc:
            seen_mscc = True
            mscc_end = pos + length
            nxt = data                                       # descend
        pos = nxt
    return result, mscc_result, granted


def split_frames(buf: bytearray) -> list[bytes]:
    """Remove and return the complete frames at the front of `buf` (the client trusts its peer)."""
    frames = []
    pos = 0
    n = len(buf)
    while n - pos >= HEADER_LEN:
        length = frame_length(buf, pos)
        if length < HEADER_LEN:
            raise ValueError(f"bad Diameter message length {length}")
        if n - pos < length:
            break
        frames.append(bytes(buf[pos:pos + length]))
        pos += length
    if pos:
        del buf[:pos]
    return frames
