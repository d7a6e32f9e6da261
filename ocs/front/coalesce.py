"""Writes queued during one pass of the event loop go out in one transport.write.

Measured on this machine: one write per answer instead of one per loop pass costs 3.4-5.2x when
requests are pipelined (see the performance reference). Used by the peer connections and the
link to the charging engine.
"""

from __future__ import annotations

import asyncio


class Coalescer:
    __slots__ = ("_out", "_pending", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._pending = False

    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, *parts: bytes) -> None:
        if not self.open():
            return
        self._out.extend(parts)
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._pending = False
        t = self.transport
        if self._out and t is not None and not t.is_closing():
            t.write(b"".join(self._out))
        self._out.clear()
