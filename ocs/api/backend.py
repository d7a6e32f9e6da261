"""How the API reaches state: commands of ocs.charging.commands, through the control channel.

`EngineBackend` talks to a running engine over a pool of its control connections, on the event
loop.
`LocalBackend` is `ocs api` with no server: this process holds the data dir's lock shared for
its whole life and runs the commands on LMDB itself (a server started meanwhile waits for it).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

from ocs.api.problems import Problem
from ocs.charging.control import aio, client, wire


class Backend(Protocol):
    async def call(self, name: str, args: dict[str, Any], actor: dict[str, Any]) -> Any: ...

    def close(self) -> None: ...


def _problem(exc: Exception) -> Problem:
    if isinstance(exc, client.Refused):
        return Problem(exc.kind if exc.kind != "invalid" else "invalid", str(exc))
    return Problem("unavailable", str(exc), {"Retry-After": "1"})


class EngineBackend:
    """Commands to the running engine over a pool of control connections (ocs.charging.control.aio)."""

    def __init__(self, data: str) -> None:
        self._pool = aio.Pool(data)

    async def call(self, name: str, args: dict[str, Any], actor: dict[str, Any]) -> Any:
        try:
            return await self._pool.call(name, args, actor)
        except (client.Refused, client.Failed) as exc:
            raise _problem(exc) from None

    def close(self) -> None:
        self._pool.close()


class LocalBackend:
    def __init__(self, data: str) -> None:
        if not os.path.exists(os.path.join(data, "data.mdb")):
            raise client.Refused(f"no OCS data at {data}")
        self._fd = wire.open_lock(data)
        if not wire.try_shared(self._fd):
            os.close(self._fd)
            raise client.Failed(f"a server serves {data}: `ocs serve` runs the API itself "
                                "(--api), or stop it to run `ocs api` alone")
        try:
            self._runner = client.Local(data, create=False)
        except BaseException:
            os.close(self._fd)
            raise

    async def call(self, name: str, args: dict[str, Any], actor: dict[str, Any]) -> Any:
        try:
            return await asyncio.to_thread(self._runner.call, name, args, actor)
        except (client.Refused, client.Failed) as exc:
            raise _problem(exc) from None

    def close(self) -> None:
        self._runner.close()
        os.close(self._fd)
