"""How the API reaches state: commands of ocs.charging.commands, through the control channel.

`EngineBackend` talks to a running engine over its socket, one connection per worker thread
(the blocking client runs in asyncio's thread pool, so the event loop never waits on it).
`LocalBackend` is `ocs api` with no server: this process holds the data dir's lock shared for
its whole life and runs the commands on LMDB itself (a server started meanwhile waits for it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any, Protocol

from ocs.api.problems import Problem
from ocs.charging.control import client, wire


class Backend(Protocol):
    async def call(self, name: str, args: dict[str, Any], actor: dict[str, Any]) -> Any: ...

    def close(self) -> None: ...


def _problem(exc: Exception) -> Problem:
    if isinstance(exc, client.Refused):
        return Problem(exc.kind if exc.kind != "invalid" else "invalid", str(exc))
    return Problem("unavailable", str(exc), {"Retry-After": "1"})


class EngineBackend:
    def __init__(self, data: str) -> None:
        self.data = data
        self._local = threading.local()
        self._all: list[socket.socket] = []
        self._lock = threading.Lock()

    def _remote(self) -> client.Remote:
        r: client.Remote | None = getattr(self._local, "remote", None)
        if r is None:
            addr = wire.Address(self.data)
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    sock.connect(addr.address)
                except OSError as exc:
                    sock.close()
                    raise client.Failed(f"the engine does not answer on {addr.path}: "
                                        f"{exc.strerror}") from None
            finally:
                addr.close()
            with self._lock:
                self._all.append(sock)
            r = self._local.remote = client.Remote(sock)
        return r

    def _call(self, name: str, args: dict[str, Any], actor: dict[str, Any]) -> Any:
        remote = self._remote()
        try:
            return remote.call(name, args, actor)
        except client.Failed:
            self._local.remote = None  # reconnect next time; this outcome is unknown
            remote.sock.close()
            raise

    async def call(self, name: str, args: dict[str, Any], actor: dict[str, Any]) -> Any:
        try:
            return await asyncio.to_thread(self._call, name, args, actor)
        except (client.Refused, client.Failed) as exc:
            raise _problem(exc) from None

    def close(self) -> None:
        with self._lock:
            for s in self._all:
                s.close()
            self._all.clear()


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
