"""The control channel's wire: where its socket and lock live, and its frames.

While a server runs, its charging engine holds DATA/engine.lock exclusively (flock) and listens on
DATA/control.sock (mode 0600; the data dir itself is 0700). A command-line client that gets the
lock shared runs its command on LMDB directly and holds the lock until it is done, so an engine
cannot start under it; one that cannot get it sends the command to the engine. The lock goes with
the process holding it (kill -9 included), so a stale socket file never misleads a client.

A frame is a big-endian u32 length then that many bytes of msgpack: a request
{"cmd": NAME, "args": {...}}, an answer {"ok": RESULT} or {"refused": MESSAGE} (the command changed
nothing: exit 2) or {"failed": MESSAGE} (the server could not apply it: exit 1).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import Any

import msgpack

SOCKET_NAME = "control.sock"
LOCK_NAME = "engine.lock"
MAX_FRAME = 256 << 20
_LEN = struct.Struct(">I")
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; leave room for the terminator


class FrameError(Exception):
    """A frame over MAX_FRAME or one that is not msgpack: the connection is closed."""


def pack(obj: object) -> bytes:
    payload: bytes = msgpack.packb(obj, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame of {len(payload)} bytes is over {MAX_FRAME}")
    return _LEN.pack(len(payload)) + payload


def recv(sock: socket.socket) -> Any:
    """The next frame's object; None at a clean EOF before a frame; FrameError on a bad frame,
    ConnectionError on an EOF inside one."""
    head = _exactly(sock, 4, eof_ok=True)
    if head is None:
        return None
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise FrameError(f"frame of {n} bytes is over {MAX_FRAME}")
    body = _exactly(sock, n, eof_ok=False)
    try:
        return msgpack.unpackb(body or b"", raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise FrameError(f"not msgpack: {exc}") from None


def _exactly(sock: socket.socket, n: int, *, eof_ok: bool) -> bytes | None:
    chunks, have = [], 0
    while have < n:
        chunk = sock.recv(min(n - have, 1 << 20))
        if not chunk:
            if eof_ok and have == 0:
                return None
            raise ConnectionError("connection closed inside a frame")
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def socket_path(data: str) -> str:
    return os.path.join(data, SOCKET_NAME)


class Address:
    """The socket's address as bind/connect can take it: a long data dir path (pytest's temp dirs
    come close to sockaddr_un's 108 bytes) is reached through an O_PATH descriptor of the dir."""

    def __init__(self, data: str) -> None:
        self.path = socket_path(data)
        self._fd: int | None = None
        if len(os.fsencode(self.path)) <= _SUN_PATH_MAX:
            self.address = self.path
        else:
            self._fd = os.open(data, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self.address = f"/proc/self/fd/{self._fd}/{SOCKET_NAME}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_lock(data: str) -> int:
    """The lock file's descriptor (created 0600 if missing)."""
    return os.open(os.path.join(data, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def try_shared(fd: int) -> bool:
    """Take the lock shared without waiting: False when an engine holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def hold(fd: int, *, exclusive: bool) -> None:
    """Take the lock, waiting for clients running commands on LMDB directly to finish."""
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
