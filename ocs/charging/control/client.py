"""The client side of the control channel: send a command to the running engine, or run it here.

`session(data)` decides once per CLI invocation: with no engine holding the data dir's lock it
takes the lock shared and runs commands on LMDB directly (one durable write txn each, through the
same functions the engine runs); otherwise it connects to the engine's socket. Either way a command
is `run(name, **args)` and returns the same plain data.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import msgpack

from ocs.charging.control import wire

CONNECT_WAIT = 120.0  # an engine that holds the lock is starting (loading its state) at worst


class Refused(Exception):
    """The command changed nothing; the message says why (the CLI exits 2), `kind` what sort of
    refusal it is (ocs.charging.commands: invalid, not_found, conflict, unauthorized, forbidden)."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class Failed(Exception):
    """The server could not apply the command, or went away before answering (the CLI exits 1)."""


def cli_actor() -> dict[str, Any]:
    """Who a command-line command is audited as: cli:USER."""
    import getpass
    try:
        return {"cli": getpass.getuser()}
    except (KeyError, OSError):  # no passwd entry for the uid (a container)
        return {"cli": f"uid{os.getuid()}"}


class Runner(Protocol):
    remote: bool

    def call(self, name: str, args: dict[str, Any], actor: dict[str, Any] | None) -> Any: ...

    def run(self, command: str, /, **args: Any) -> Any: ...


class Remote:
    """A connection to the engine; one command in flight at a time."""

    remote = True

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def run(self, command: str, /, **args: Any) -> Any:
        return self.call(command, args, cli_actor())

    def call(self, name: str, args: dict[str, Any], actor: dict[str, Any] | None) -> Any:
        try:
            self.sock.sendall(wire.pack({"cmd": name, "args": args, "actor": actor}))
            answer = wire.recv(self.sock)
        except (OSError, wire.FrameError) as exc:
            raise Failed(f"lost the server before it answered ({exc}); the change may or may not "
                         "be in force: repeat the command with the same --idempotency-key") from None
        return outcome(answer)


def outcome(answer: Any) -> Any:
    """An answer frame's result, or the Refused or Failed it stands for (None: the connection
    closed before the answer)."""
    if answer is None:
        raise Failed("the server closed the connection before answering; the change may or "
                     "may not be in force: repeat the command with the same --idempotency-key")
    if "ok" in answer:
        return answer["ok"]
    if "refused" in answer:
        raise Refused(answer["refused"], answer.get("kind", "invalid"))
    raise Failed(answer.get("failed", "the server could not apply the command"))


class Local:
    """Commands on LMDB directly (no server runs; this process holds the lock shared)."""

    remote = False

    def __init__(self, data: str, *, create: bool) -> None:
        from balance.store import open_store
        self.store = open_store(data) if create else _open_existing(data)

    def run(self, command: str, /, **args: Any) -> Any:
        return self.call(command, args, cli_actor())

    def call(self, name: str, args: dict[str, Any], actor: dict[str, Any] | None) -> Any:
        from balance.errors import BalanceError
        from balance.store import Tx
        from ocs.charging import commands
        try:
            if commands.reads(name):  # a read txn: a read command that wrote would fail
                with self.store.read() as view:
                    result = commands.run(Tx(view.read_txn, self.store, int(time.time())), name,
                                          args, actor)
            else:
                result = self.store.execute(lambda tx: commands.run(tx, name, args, actor))
        except commands.Refused as exc:
            raise Refused(str(exc), exc.kind) from None
        except BalanceError as exc:  # the store is full
            raise Failed(str(exc)) from None
        # what a remote caller would get: plain data only, in both modes
        return msgpack.unpackb(msgpack.packb(result, use_bin_type=True), raw=False,
                               strict_map_key=False)

    def close(self) -> None:
        self.store.close()


def _open_existing(data: str) -> Any:
    from balance.store import open_store
    if not os.path.exists(os.path.join(data, "data.mdb")):
        raise Refused(f"no OCS data at {data}")
    try:
        return open_store(data)
    except (OSError, ValueError) as exc:
        raise Refused(f"cannot open data dir {data}: {exc}") from None


@contextmanager
def session(data: str, *, create: bool = False, wait: float = CONNECT_WAIT) -> Iterator[Runner]:
    """A Runner for the data dir `data`: Remote while an engine serves it, else Local. `create`
    makes the data dir (and store) when missing; without it a dir holding no store is refused."""
    if not os.path.isdir(data):
        if not create:
            raise Refused(f"no OCS data at {data}")
        os.makedirs(data, exist_ok=True)
    try:
        fd = wire.open_lock(data)
    except OSError as exc:
        raise Refused(f"cannot open data dir {data}: {exc.strerror}") from None
    try:
        for _ in range(3):  # an engine that stops while we wait for it: decide again
            if wire.try_shared(fd):
                local = Local(data, create=create)
                try:
                    yield local
                finally:
                    local.close()
                return
            sock = _connect(data, wait)
            if sock is None:
                continue
            try:
                yield Remote(sock)
            finally:
                sock.close()
            return
        raise Failed(f"the server of {data} keeps starting and stopping; run the command again")
    finally:
        os.close(fd)


def _connect(data: str, wait: float) -> socket.socket | None:
    """Connect to the engine's socket; an engine holding the lock may still be loading its state,
    so a missing socket is waited for (up to `wait` seconds), as long as the lock stays held.
    None: the engine went away meanwhile."""
    addr = wire.Address(data)
    deadline = time.monotonic() + wait
    try:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(addr.address)
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise Failed(f"a server holds {data} but does not answer on "
                                 f"{addr.path}: {exc.strerror}") from None
                if _lock_free(data):  # the engine went away meanwhile
                    return None
                time.sleep(0.05)
            except OSError as exc:
                sock.close()
                raise Failed(f"cannot reach the server on {addr.path}: {exc.strerror}") from None
    finally:
        addr.close()


def _lock_free(data: str) -> bool:
    fd = wire.open_lock(data)
    try:
        return wire.try_shared(fd)
    finally:
        os.close(fd)
