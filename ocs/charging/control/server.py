"""The engine's side of the control channel: a listening Unix socket, one I/O thread for every
client connection.

A client's request becomes an op of the engine's next batch (`submit`), so it is applied in the
engine's order between charging requests, in the same write transaction as they are; its answer
is sent once that batch is durable, like a CCA. One thread reads every connection (epoll) and
writes every answer: the engine's syncer only packs an answer and queues it, so a slow client
never holds up the CCAs of a batch. A thread per connection cost the engine a thread wake-up and
its GIL hand-offs per command: 500 API reads/s beside charging at half its peak doubled the CCR
p99; one thread wakes once for whatever is ready.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack

from ocs.charging import commands
from ocs.charging.control import wire

log = logging.getLogger("ocs.control")
OUTBOX_PAUSE = 8 << 20  # bytes of answers queued for a client before we stop reading its requests
OWED_PAUSE = 64         # requests of one client in the engine's queue before we stop reading it
#                         (so one pipelining client cannot fill a batch that every CCR waits behind)


class Reply:
    """Where the engine puts a command's outcome: packed into its frame (by the syncer thread,
    which holds the engine's CPU lock anyway) and queued for the I/O thread to send."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn

    def done(self, result: object, exc: BaseException | None) -> None:
        if exc is None:
            self._put({"ok": result})
        elif isinstance(exc, commands.Refused):
            self._put({"refused": str(exc), "kind": exc.kind})
        else:
            self._put({"failed": failure(exc)})

    def failed(self, message: str) -> None:
        self._put({"failed": message})

    def _put(self, answer: dict[str, Any]) -> None:
        try:
            frame = wire.pack(answer)
        except Exception as exc:  # too big, not msgpack-able, an int past 64 bits: not the engine's end
            frame = wire.pack({"failed": f"the answer cannot be sent: {type(exc).__name__}: "
                                         f"{str(exc)[:200]}"})
        self._conn.queue(frame)


class _Conn:
    """One client connection: what it sent that is not a whole frame yet, what it is owed."""

    __slots__ = ("closed", "eof", "inbox", "lock", "outbox", "owed", "server", "sock", "watched")

    def __init__(self, sock: socket.socket, server: ControlServer) -> None:
        self.sock, self.server = sock, server
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.eof = False    # the client has sent all it will (it may still wait for answers)
        self.owed = 0       # requests submitted and not answered yet
        self.watched = selectors.EVENT_READ

    def queue(self, frame: bytes) -> None:
        """From any thread: the frame goes out in order after what is queued already."""
        with self.lock:
            self.owed -= 1
            if self.closed:
                return  # the client went away; its command, if submitted, still applied
            self.outbox += frame
        self.server.wake(self)

    @property
    def finished(self) -> bool:
        with self.lock:
            return self.eof and self.owed == 0 and not self.outbox and not self.inbox


def failure(exc: BaseException) -> str:
    from balance.errors import StoreFullError
    if isinstance(exc, StoreFullError):
        return str(exc)
    return f"internal error in the engine ({type(exc).__name__}); see the server log"


Submit = Callable[[Callable[[Any], Any], Reply], None]


class ControlServer:
    def __init__(self, data: str, submit: Submit) -> None:
        self.data = data
        self.submit = submit
        self.addr = wire.Address(data)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sending: set[_Conn] = set()  # connections with answers queued (under _lock)
        self._lock = threading.Lock()

    def start(self) -> None:
        """Bind (replacing a socket file left by an engine that was killed: we hold the lock, so
        no engine listens on it) and serve in a thread."""
        try:
            os.unlink(self.addr.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(self.addr.address)
        os.chmod(self.addr.path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="ocs-engine-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        try:
            os.unlink(self.addr.path)
        except FileNotFoundError:
            pass
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        self.addr.close()

    def wake(self, conn: _Conn) -> None:
        with self._lock:
            first = not self._sending
            self._sending.add(conn)
        if first:  # one byte per round of answers, not per answer
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"x")

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._sel.select(1.0):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(BlockingIOError, OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._serve(key.data, events)
                self._flush_queued()
        finally:
            self._flush_queued()  # the last answers (the engine stops us after its syncer)
            for key in list(self._sel.get_map().values()):
                if isinstance(key.fileobj, socket.socket):  # the listener, wake-up, clients
                    with contextlib.suppress(OSError):
                        key.fileobj.close()
            self._sel.close()
            self._wake_w.close()

    def _serve(self, conn: _Conn, events: int) -> None:
        try:
            if events & selectors.EVENT_READ:
                self._read(conn)
            if events & selectors.EVENT_WRITE and not conn.closed:
                self._flush(conn)
        except Exception:  # one client's trouble must not end the control plane
            log.exception("control connection failed; closed")
            self._close(conn)

    def _flush_queued(self) -> None:
        """Send what the syncer queued since the last round."""
        with self._lock:
            pending, self._sending = self._sending, set()
        for conn in pending:
            self._serve(conn, selectors.EVENT_WRITE)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("control socket accept failed: %s", exc)
                return
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, _Conn(sock, self))

    def _close(self, conn: _Conn) -> None:
        with conn.lock:
            conn.closed = True
            conn.outbox.clear()
        if conn.watched:
            self._sel.unregister(conn.sock)
            conn.watched = 0
        conn.sock.close()

    def _read(self, conn: _Conn) -> None:
        try:
            while True:
                chunk = conn.sock.recv(1 << 16)
                if not chunk:
                    conn.eof = True  # answer what it sent, then close
                    break
                conn.inbox += chunk
                if len(chunk) < 1 << 16:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn)
            return
        self._parse(conn)

    def _parse(self, conn: _Conn) -> None:
        """Submit the whole frames received, at most OWED_PAUSE of them unanswered at a time
        (the rest wait in the inbox until answers go out)."""
        buf = conn.inbox
        partial_frame = False
        while len(buf) >= 4:
            if conn.owed >= OWED_PAUSE:
                break
            n = int.from_bytes(buf[:4], "big")
            if n > wire.MAX_FRAME:
                log.warning("control client sent a frame of %d bytes; connection closed", n)
                self._close(conn)
                return
            if len(buf) < 4 + n:
                partial_frame = True
                break
            body = bytes(buf[4:4 + n])
            del buf[:4 + n]
            try:
                request = msgpack.unpackb(body, raw=False, strict_map_key=False)
            except Exception as exc:  # msgpack raises several unrelated types for bad bytes
                log.warning("control client sent a bad frame (not msgpack: %s); connection "
                            "closed", exc)
                self._close(conn)
                return
            refusal = self._refusal(request)
            # A refusal goes through the batch too, so a client that pipelines gets its answers
            # in the order of its requests.
            op = (partial(_refuse, refusal) if refusal is not None else
                  partial(commands.run, name=request["cmd"], args=request.get("args", {}),
                          actor=request.get("actor")))
            with conn.lock:
                conn.owed += 1
            self.submit(op, Reply(conn))
        else:
            partial_frame = bool(buf)
        if conn.eof and partial_frame:  # EOF inside a frame: nothing more will come
            log.warning("control client closed inside a frame; connection closed")
            self._close(conn)
            return
        self._watch(conn)

    def _flush(self, conn: _Conn) -> None:
        with conn.lock:
            if conn.closed:
                return
            try:
                sent = conn.sock.send(conn.outbox) if conn.outbox else 0
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = -1
            if sent > 0:
                del conn.outbox[:sent]
        if sent < 0:
            self._close(conn)
            return
        if conn.inbox and conn.owed < OWED_PAUSE:
            self._parse(conn)  # frames held back while it had OWED_PAUSE unanswered
        else:
            self._watch(conn)

    def _watch(self, conn: _Conn) -> None:
        """Watch for what the connection needs next: more requests, room for answers; close it
        once the client is done and owed nothing."""
        if conn.closed:
            return
        if conn.finished:
            self._close(conn)
            return
        with conn.lock:  # a client that does not read its answers is not read from either
            reading = not conn.eof and len(conn.outbox) < OUTBOX_PAUSE and conn.owed < OWED_PAUSE
            events = (selectors.EVENT_READ if reading else 0) | (
                selectors.EVENT_WRITE if conn.outbox else 0)
        if events == conn.watched:
            return
        if conn.watched and events:
            self._sel.modify(conn.sock, events, conn)
        elif events:
            self._sel.register(conn.sock, events, conn)
        else:
            self._sel.unregister(conn.sock)
        conn.watched = events

    @staticmethod
    def _refusal(request: object) -> commands.Refused | None:
        if not (isinstance(request, dict) and isinstance(request.get("cmd"), str)
                and isinstance(request.get("args", {}), dict)):
            return commands.Refused("a request is {\"cmd\": NAME, \"args\": {...}}",
                                    commands.INVALID)
        name, actor = request["cmd"], request.get("actor")
        if name not in commands.COMMANDS:
            return commands.Refused(f"unknown command {name!r}", commands.NOT_FOUND)
        if actor is not None and not isinstance(actor, dict):
            return commands.Refused("actor must be a map", commands.INVALID)
        return None


def _refuse(refusal: commands.Refused, _tx: object) -> None:
    raise refusal
