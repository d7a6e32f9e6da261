"""The framing of the link between the network front and its charging engine (a socketpair).

Both sides import it, so neither imports the other: the front stays free of LMDB and numba.
Each message is `length, token` (two big-endian u32) then `length` bytes: a raw CCR frame one
way, its answer the other; two reserved tokens carry the engine's own signals.
"""

from __future__ import annotations

import struct

MSG = struct.Struct(">II")  # payload length, token
TOKEN_READY = 0xFFFFFFFF    # engine -> front, once, after warm-up
TOKEN_STATS = 0xFFFFFFFE    # engine -> front, about once a second: msgpack writer stats


def frame_message(token: int, payload: bytes) -> bytes:
    return MSG.pack(len(payload), token) + payload


def split_messages(buf: bytearray) -> list[tuple[int, bytes]]:
    """Complete messages at the front of buf (consumed); a partial one stays."""
    out = []
    pos, n = 0, len(buf)
    while n - pos >= 8:
        length, token = MSG.unpack_from(buf, pos)
        if n - pos - 8 < length:
            break
        out.append((token, bytes(buf[pos + 8:pos + 8 + length])))
        pos += 8 + length
    del buf[:pos]
    return out
