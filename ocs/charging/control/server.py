"""The engine's side of the control channel: a listening Unix socket and a thread per client.

A client's request becomes an op of the engine's next batch (`submit`), so it is applied in the
engine's order between charging requests, in the same write transaction as they are; its answer
is sent once that batch is durable, like a CCA. A connection's thread sends the answer itself
(the engine's syncer only hands it over), so a slow client never holds up the CCAs of a batch.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from ocs.charging import commands
from ocs.charging.control import wire

log = logging.getLogger("ocs.control")


class Reply:
    """Where the engine puts a command's outcome; the connection's thread sends it."""

    __slots__ = ("_q",)

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def done(self, result: object, exc: BaseException | None) -> None:
        if exc is None:
            self._q.put({"ok": result})
        elif isinstance(exc, commands.Refused):
            self._q.put({"refused": str(exc), "kind": exc.kind})
        else:
            self._q.put({"failed": failure(exc)})

    def failed(self, message: str) -> None:
        self._q.put({"failed": message})

    def wait(self) -> dict[str, Any]:
        return self._q.get()


def failure(exc: BaseException) -> str:
    from balance.errors import StoreFullError
    if isinstance(exc, StoreFullError):
        return str(exc)
    return f"internal error in the engine ({type(exc).__name__}); see the server log"


Submit = Callable[[Callable[[Any], Any], Reply], None]


class ControlServer:
    def __init__(self, data: str, submit: Submit, cpu: threading.Lock) -> None:
        self.data = data
        self.submit = submit
        self.cpu = cpu
        self.addr = wire.Address(data)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Bind (replacing a socket file left by an engine that was killed: we hold the lock, so
        no engine listens on it) and accept in a thread."""
        try:
            os.unlink(self.addr.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(self.addr.address)
        os.chmod(self.addr.path, 0o600)
        sock.listen(64)
        self._listener = sock
        self._thread = threading.Thread(target=self._accept, name="ocs-engine-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            try:
                os.unlink(self.addr.path)
            except FileNotFoundError:
                pass
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        self.addr.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="ocs-engine-control-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                while True:
                    try:
                        request = wire.recv(conn)
                    except (wire.FrameError, ConnectionError) as exc:
                        log.warning("control client sent a bad frame (%s); connection closed", exc)
                        return
                    if request is None:
                        return
                    conn.sendall(self._answer(request))
        except OSError:  # the client went away; its command, if submitted, still applies
            return

    def _answer(self, request: object) -> bytes:
        if not (isinstance(request, dict) and isinstance(request.get("cmd"), str)
                and isinstance(request.get("args", {}), dict)):
            return wire.pack({"refused": "a request is {\"cmd\": NAME, \"args\": {...}}",
                              "kind": commands.INVALID})
        name, args, actor = request["cmd"], request.get("args", {}), request.get("actor")
        if name not in commands.COMMANDS:
            return wire.pack({"refused": f"unknown command {name!r}", "kind": commands.NOT_FOUND})
        if actor is not None and not isinstance(actor, dict):
            return wire.pack({"refused": "actor must be a map", "kind": commands.INVALID})
        reply = Reply()
        self.submit(partial(commands.run, name=name, args=args, actor=actor), reply)
        answer = reply.wait()
        with self.cpu:  # Python work: not beside the batch's ops (see GroupCommitWriter.cpu)
            try:
                return wire.pack(answer)
            except (wire.FrameError, TypeError, ValueError) as exc:
                return wire.pack({"failed": f"the answer cannot be sent: {exc}"})
