"""Error answers for any request (RFC 6733 §7.2 answer-message), built without trusting the request."""

from __future__ import annotations

import struct

from protocol import build as B
from protocol import constants as C
from protocol.header import FLAG_ERROR, FLAG_PROXIABLE, HEADER_LEN, Header

_HDR = struct.Struct(">IIIII")
_II = struct.Struct(">II").unpack_from
_COPY_ALWAYS = frozenset({263, 284})  # Session-Id, Proxy-Info
_COPY_CC = frozenset({258, 416, 415})  # Auth-Application-Id, CC-Request-Type, CC-Request-Number
_PROXY_INFO_HEAD = b"\x00\x00\x01\x1c"  # AVP code 284


def _copyable(frame: bytes, command_code: int) -> tuple[bytes | None, list[bytes], list[bytes]]:
    """Session-Id, Proxy-Infos and (for CCR) the CC ids, as raw AVPs, from the well-formed prefix
    of the request: the scan stops at the first AVP it cannot trust."""
    session = None
    proxies: list[bytes] = []
    cc: list[bytes] = []
    want_cc = command_code == C.CC_CREDIT_CONTROL
    # Without Proxy-Info in the frame (one substring search; a false hit only means a full scan),
    # the scan ends once the Session-Id and the CC ids are found: RFC 6733 §8.8 puts the Session-Id
    # first and the ids come early, so a shed CCR's answer reads a few AVPs, not the whole request.
    proxy = _PROXY_INFO_HEAD in frame
    needed = 1 + (len(_COPY_CC) if want_cc else 0)
    n = len(frame)
    p = HEADER_LEN
    while n - p >= 8 and (proxy or needed):
        code, fl = _II(frame, p)
        e = p + (fl & 0xFFFFFF)
        if e < p + 8 or e > n or fl & 0x9F000000:  # bad length, reserved bits, or vendor AVP
            if fl & 0x80000000 and not fl & 0x1F000000 and p + 12 <= e <= n:
                p = (e + 3) & -4
                continue
            break
        # Copy only the AVPs kept (a shed request's answer is built thousands of times a second).
        if code == 263 and session is None:
            session = bytes(frame[p:e]) + bytes(-(e - p) & 3)
            needed -= 1
        elif code == 284:
            proxies.append(bytes(frame[p:e]) + bytes(-(e - p) & 3))
        elif want_cc and e - p == 12 and code in _COPY_CC:
            cc.append(bytes(frame[p:e]))
            needed -= 1  # a repeated one may end the scan before a third: the answer still names it
        p = (e + 3) & -4
    return session, proxies, cc


def encode_error_answer(
    request_frame: bytes,
    header: Header,
    result_code: int,
    origin_host: str,
    origin_realm: str,
    failed_avp: bytes | None = None,
    error_message: str | None = None,
) -> bytes:
    """Answer a request we cannot process: R cleared, P copied, E set for 3xxx, same command
    code / application id / hop-by-hop / end-to-end; Session-Id and Proxy-Info copied when found."""
    session, proxies, cc = _copyable(request_frame, header.command_code)
    p = []
    if session is not None:
        p.append(session)
    p += [B.utf8(264, origin_host), B.utf8(296, origin_realm), B.u32(268, result_code)]
    p += cc
    if error_message is not None:
        p.append(B.utf8(281, error_message, 0))
    if failed_avp is not None:
        p.append(B.group(279, failed_avp))
    p += proxies
    body = b"".join(p)
    flags = (header.flags & FLAG_PROXIABLE) | (FLAG_ERROR if C.is_protocol_error(result_code) else 0)
    return (
        _HDR.pack(
            (1 << 24) | (HEADER_LEN + len(body)),
            (flags << 24) | header.command_code,
            header.application_id,
            header.hop_by_hop,
            header.end_to_end,
        )
        + body
    )


def with_proxy_info(answer: bytes, request: bytes) -> bytes:
    """The answer with the request's Proxy-Info AVPs appended, in order (RFC 6733 §6.2: an answer
    MUST carry them back). Answers are encoded from records that do not hold Proxy-Info, and a
    replayed answer must carry the Proxy-Info of the request it answers now, so they are added at
    the last step. A request without Proxy-Info costs one substring search."""
    if _PROXY_INFO_HEAD not in request:
        return answer
    _session, proxies, _cc = _copyable(request, 0)
    if not proxies:
        return answer
    extra = b"".join(proxies)
    out = bytearray(answer)
    out += extra
    out[1:4] = len(out).to_bytes(3, "big")
    return bytes(out)
