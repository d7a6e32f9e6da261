"""Bytes from TCP reads in, complete Diameter frames out (RFC 6733 §3 length framing)."""

from __future__ import annotations

from protocol import constants as C
from protocol.errors import DiameterError

HEADER_LEN = 20


class Framer:
    """Buffers at most one incomplete frame; never allocates from an unread length field.

    A version byte other than 1, a length below 20 or not a multiple of 4, or above
    ``max_message_size`` means we cannot find the next frame boundary: DiameterError(fatal=True),
    and the framer stays failed (the server closes the connection). When the offending message's
    20-byte header had arrived, ``failed_header`` holds it, so the error can still be answered.
    """

    __slots__ = ("_buf", "_failed", "failed_header", "max_message_size")

    def __init__(self, max_message_size: int = 65536) -> None:
        if max_message_size < HEADER_LEN:
            raise ValueError("max_message_size must be at least 20")
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._failed: DiameterError | None = None
        self.failed_header: bytes | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray = buf
        else:
            src = data
        n = len(src)
        frames: list[bytes] = []
        pos = 0
        maxlen = self.max_message_size
        while pos < n:
            if src[pos] != 1:
                self._fail(src, pos, C.DIAMETER_UNSUPPORTED_VERSION,
                           f"unsupported Diameter version {src[pos]}")
            if n - pos < 4:
                break
            length = (src[pos + 1] << 16) | (src[pos + 2] << 8) | src[pos + 3]
            if length < HEADER_LEN or length & 3:
                self._fail(src, pos, C.DIAMETER_INVALID_MESSAGE_LENGTH, f"invalid message length {length}")
            if length > maxlen:
                self._fail(src, pos, C.DIAMETER_INVALID_MESSAGE_LENGTH,
                           f"message length {length} exceeds the maximum {maxlen}")
            end = pos + length
            if end > n:
                break
            frames.append(src if length == n and type(src) is bytes else bytes(src[pos:end]))
            pos = end
        if src is buf:
            del buf[:pos]
        elif pos < n:
            buf += src[pos:]
        return frames

    def _fail(self, src: bytes | bytearray, pos: int, code: int, message: str) -> None:
        if len(src) - pos >= HEADER_LEN:
            self.failed_header = bytes(src[pos:pos + HEADER_LEN])
        self._buf = bytearray()
        self._failed = DiameterError(code, message, None, fatal=True)
        raise self._failed
