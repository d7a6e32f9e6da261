"""The control channel from an asyncio program (the API process): a pool of connections.

The engine answers each control connection's commands in order, one at a time here, so
concurrency is the number of connections: a request takes a free connection, sends its frame,
reads the answer on the event loop and gives the connection back. No thread hop per call (the
blocking client in a thread pool held the API to the pool's six threads, and so to engine
batches of six).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgpack

from ocs.charging.control import wire
from ocs.charging.control.client import Failed, outcome

_LOST = ("lost the server before it answered ({}); the change may or may not be in force: "
         "repeat the request with the same Idempotency-Key")


class Pool:
    def __init__(self, data: str, size: int = 64) -> None:
        self.data = data
        self._free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(size)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        addr = wire.Address(self.data)
        try:
            return await asyncio.open_unix_connection(addr.address, limit=wire.MAX_FRAME + 4)
        except OSError as exc:
            raise Failed(f"the engine does not answer on {addr.path}: {exc.strerror}") from None
        finally:
            addr.close()

    async def call(self, name: str, args: dict[str, Any], actor: dict[str, Any] | None) -> Any:
        """The command's result; Refused or Failed as from the blocking client."""
        async with self._slots:
            conn = self._free.pop() if self._free else await self._connect()
            reader, writer = conn
            try:
                writer.write(wire.pack({"cmd": name, "args": args, "actor": actor}))
                head = await reader.readexactly(4)
                n = int.from_bytes(head, "big")
                if n > wire.MAX_FRAME:
                    raise wire.FrameError(f"frame of {n} bytes is over {wire.MAX_FRAME}")
                answer = msgpack.unpackb(await reader.readexactly(n), raw=False,
                                         strict_map_key=False)
            except asyncio.IncompleteReadError:
                writer.close()
                raise Failed(_LOST.format("the connection closed")) from None
            except (OSError, wire.FrameError, ValueError, msgpack.UnpackException) as exc:
                writer.close()
                raise Failed(_LOST.format(exc)) from None
            except BaseException:  # cancelled mid-call: the connection's state is unknown
                writer.close()
                raise
            self._free.append(conn)
            return outcome(answer)

    def close(self) -> None:
        for _reader, writer in self._free:
            with contextlib.suppress(RuntimeError):
                writer.close()
        self._free.clear()
