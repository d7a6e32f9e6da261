"""The peer and watchdog tables (ocs.front.peer_states) walked without sockets.

Every (state, event) pair, listed or not, is driven through a PeerConnection by the input that
really produces the event (a frame to data_received, drained(), disconnect(), close(),
connection_lost(), a watchdog tick): a listed pair must run the listed action with the listed
next state already set; a pair without a row must change nothing and send nothing (the RFC's
tables have no row for it either). A few scenarios follow the chains the table starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from ocs.config import ServeConfig
from ocs.front import peer as peer_mod
from ocs.front.peer import PeerConnection
from ocs.front.peer_states import (
    PEER,
    WATCHDOG,
    Action,
    Event,
    State,
    Step,
    Watch,
    WatchAction,
    WatchEvent,
    WatchStep,
    peer_step,
    watchdog_step,
)
from protocol import constants as C
from protocol.base import decode_cea, encode_cer, encode_dpa, encode_dpr, encode_dwa, encode_dwr
from protocol.ccr import encode_ccr
from protocol.header import decode_header
from protocol.records import CCR, CER, DPA, DPR, DWA, DWR, MSCCRequest, Units

HOST = "gw.test"


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 3868), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeDispatcher:
    def __init__(self) -> None:
        self.submitted: list[bytes] = []

    def submit(self, peer: PeerConnection, frame: bytes, header: object) -> None:
        self.submitted.append(frame)


def fake_server(**cfg: Any) -> Any:
    return SimpleNamespace(cfg=ServeConfig(watchdog_interval=30.0, **cfg), peers=set(),
                           origin_state_id=1, dispatcher=FakeDispatcher())


def cer(host: str = HOST, apps: tuple[int, ...] = (4,)) -> bytes:
    return encode_cer(CER(origin_host=host, origin_realm="test", host_ip_addresses=["127.0.0.1"],
                          auth_application_ids=list(apps)), 1, 1)


def ccr() -> bytes:
    req = CCR(session_id=f"{HOST};1;1", origin_host=HOST, origin_realm="test", destination_realm="test",
              service_context_id="32251@3gpp.org", request_type=4, request_number=0,
              subscription_ids=[(0, "491740000001")],
              mscc=[MSCCRequest(rating_group=300, requested=Units(service_specific_units=1))])
    return encode_ccr(req, 5, 5)


def opened(state: State = State.WAIT_CER, watch: Watch = Watch.OKAY) -> tuple[PeerConnection, FakeTransport]:
    """A connection made, then put in `state` with what that state implies."""
    server = fake_server()
    conn = PeerConnection(server)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.state, conn.watchdog = state, watch
    if state is not State.WAIT_CER:
        conn.origin_host = HOST
    if state is State.CLOSING:
        conn._on_dpa = lambda: None
    if state is State.DRAINING:
        conn.in_flight = 1  # why it is still draining
    return conn, transport


# The input that produces each event (on a connection in any state).
INPUTS: dict[Event, Callable[[PeerConnection], None]] = {
    Event.CER: lambda c: c.data_received(cer()),
    # no common application on a first CER, another Origin-Host on a later one: refused either way
    Event.CER_REFUSED: lambda c: c.data_received(cer("other.test", apps=(0,))),
    Event.DWR: lambda c: c.data_received(encode_dwr(DWR(origin_host=HOST, origin_realm="test"), 2, 2)),
    Event.DPR: lambda c: c.data_received(
        encode_dpr(DPR(origin_host=HOST, origin_realm="test", disconnect_cause=0), 3, 3)),
    Event.MESSAGE: lambda c: c.data_received(ccr()),
    Event.DPA: lambda c: c.data_received(
        encode_dpa(DPA(origin_host=HOST, origin_realm="test", result_code=2001), 4, 4)),
    Event.ANSWER: lambda c: c.data_received(
        encode_dwa(DWA(origin_host=HOST, origin_realm="test", result_code=2001), 6, 6)),
    Event.STOP: lambda c: c.disconnect(lambda: None),
    Event.DRAINED: lambda c: c.drained(),
    Event.TIMEOUT: lambda c: c._fire(Event.TIMEOUT),  # what the DRAIN_SECONDS timer calls
    Event.NO_CER: lambda c: (setattr(c, "_connected_at", time.monotonic() - 60),
                             setattr(c, "_last_rx", time.monotonic()), c._watchdog_tick()),
    Event.ABORT: lambda c: c._fire(Event.ABORT),  # what eviction calls (see its scenario below)
    Event.DISC: lambda c: c.close("test"),
    Event.PEER_DISC: lambda c: c.connection_lost(None),
}


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object, object]]:
    """(table, action, state when it ran) for each action of either table, in order."""
    log: list[tuple[object, object, object]] = []

    def spy(table: str, action: object, fn: Callable[..., None]) -> Callable[..., None]:
        def wrapped(conn: PeerConnection, *args: Any) -> None:
            log.append((table, action, conn.state if table == "peer" else conn.watchdog))
            fn(conn, *args)
        return wrapped

    monkeypatch.setattr(peer_mod, "_ACTIONS", {a: spy("peer", a, f) for a, f in peer_mod._ACTIONS.items()})
    monkeypatch.setattr(peer_mod, "_WATCH_ACTIONS",
                        {a: spy("watch", a, f) for a, f in peer_mod._WATCH_ACTIONS.items()})
    return log


def test_every_action_has_a_method_and_every_state_a_row_set() -> None:
    assert set(peer_mod._ACTIONS) == set(Action)
    assert set(peer_mod._WATCH_ACTIONS) == set(WatchAction)
    assert set(PEER) == set(State) and set(WATCHDOG) == set(Watch)
    for state in State:  # any connection can end, and disconnect()'s callback always runs
        assert {Event.DISC, Event.PEER_DISC, Event.STOP} <= set(PEER[state]), state
    assert all(step.next is State.CLOSED for step in PEER[State.CLOSED].values())


def test_the_rfc_rows_we_implement() -> None:
    """RFC 6733 §5.6 and RFC 3539 §3.4.1, the rows a responder has (see peer_states)."""
    assert peer_step(State.WAIT_CER, Event.CER) == (Action.ACCEPT_CER, State.R_OPEN)   # R-Conn-CER
    assert peer_step(State.R_OPEN, Event.MESSAGE) == (Action.PROCESS, State.R_OPEN)
    assert peer_step(State.R_OPEN, Event.DWR) == (Action.SEND_DWA, State.R_OPEN)
    assert peer_step(State.R_OPEN, Event.ANSWER) == (Action.NONE, State.R_OPEN)         # Process-DWA
    assert peer_step(State.R_OPEN, Event.STOP) == (Action.SEND_DPR, State.CLOSING)
    assert peer_step(State.R_OPEN, Event.DPR) == (Action.HOLD_DPA, State.DRAINING)
    assert peer_step(State.R_OPEN, Event.PEER_DISC) == (Action.CLEANUP, State.CLOSED)
    assert peer_step(State.CLOSING, Event.DPA) == (Action.DRAIN, State.DRAINING)
    assert peer_step(State.CLOSING, Event.PEER_DISC) == (Action.CLEANUP, State.CLOSED)
    assert peer_step(State.DRAINING, Event.TIMEOUT) == (Action.FINISH, State.CLOSED)
    assert watchdog_step(Watch.INITIAL, WatchEvent.CONNECTION_UP) == (WatchAction.SET_WATCHDOG, Watch.OKAY)
    assert watchdog_step(Watch.OKAY, WatchEvent.RECEIVE) == (WatchAction.RECEIVED, Watch.OKAY)
    assert watchdog_step(Watch.OKAY, WatchEvent.EXPIRED) == (WatchAction.SEND_WATCHDOG, Watch.OKAY)
    assert watchdog_step(Watch.OKAY, WatchEvent.EXPIRED_PENDING) == \
        (WatchAction.CLOSE_CONNECTION, Watch.DOWN)                                      # SUSPECT folded
    assert watchdog_step(Watch.OKAY, WatchEvent.CONNECTION_DOWN) == (WatchAction.STOP, Watch.DOWN)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
async def test_peer_table_walk(state: State, event: Event, ran: list[tuple[object, object, object]]) -> None:
    conn, transport = opened(state)
    listed = PEER[state].get(event)
    transport.written.clear()
    INPUTS[event](conn)
    await asyncio.sleep(0)  # the coalesced write goes out
    steps = [(action, at) for table, action, at in ran if table == "peer"]
    if listed is not None:
        assert steps, f"{state} + {event}: no action ran"
        assert Step(*steps[0]) == listed, f"{state} + {event}"
        return
    # no row: as if nothing happened
    assert steps in ([], [(Action.NONE, state)]), f"{state} + {event}: {steps}"
    assert conn.state is state
    assert not transport.written and not transport.closing


@pytest.mark.parametrize("watch", list(Watch))
@pytest.mark.parametrize("event", list(WatchEvent))
async def test_watchdog_table_walk(watch: Watch, event: WatchEvent,
                                   ran: list[tuple[object, object, object]]) -> None:
    server = fake_server()
    conn = PeerConnection(server)
    transport = FakeTransport()
    if event is WatchEvent.CONNECTION_UP:
        conn.watchdog = watch
        conn.connection_made(transport)
    else:
        conn.connection_made(transport)
        conn.state, conn.origin_host, conn.watchdog = State.R_OPEN, HOST, watch
        ran.clear()
        transport.written.clear()
        if event is WatchEvent.RECEIVE:
            conn.data_received(encode_dwa(DWA(origin_host=HOST, origin_realm="test", result_code=2001), 6, 6))
        elif event is WatchEvent.CONNECTION_DOWN:
            conn.connection_lost(None)
        else:  # a tick after a quiet Tw, with or without a DWR pending
            conn._last_rx = time.monotonic() - 60
            conn._dwr_outstanding = event is WatchEvent.EXPIRED_PENDING
            conn._watchdog_tick()
    await asyncio.sleep(0)
    steps = [(action, at) for table, action, at in ran if table == "watch"]
    listed = WATCHDOG[watch].get(event)
    if listed is not None:
        assert steps and WatchStep(*steps[0]) == listed, f"{watch} + {event}: {steps}"
    else:
        assert steps in ([], [(WatchAction.NONE, watch)]), f"{watch} + {event}: {steps}"
        assert conn.watchdog is watch
        assert not transport.written  # no DWR from a watchdog that has no row for it


async def test_a_cer_opens_and_a_request_before_it_closes() -> None:
    conn, transport = opened()
    conn.data_received(cer())
    await asyncio.sleep(0)
    assert conn.state is State.R_OPEN and conn.origin_host == HOST
    assert decode_cea(bytes(transport.written)).result_code == C.DIAMETER_SUCCESS

    conn, transport = opened()
    conn.data_received(encode_dwr(DWR(origin_host=HOST, origin_realm="test"), 2, 2))
    await asyncio.sleep(0)
    assert conn.state is State.CLOSED and transport.closing
    assert decode_header(bytes(transport.written)).command_code == C.CC_DEVICE_WATCHDOG


async def test_dpr_with_an_answer_in_flight_waits_for_it() -> None:
    """R-Rcv-DPR holds the DPA until the answer in flight is sent (drained), then closes."""
    conn, transport = opened(State.R_OPEN)
    conn.in_flight = 1
    INPUTS[Event.DPR](conn)
    await asyncio.sleep(0)
    assert conn.state is State.DRAINING and not transport.written
    conn.in_flight = 0
    conn.drained()
    await asyncio.sleep(0)
    assert conn.state is State.CLOSED and transport.closing
    assert decode_header(bytes(transport.written)).command_code == C.CC_DISCONNECT_PEER


async def test_dpr_whose_answers_never_come_closes_after_drain_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_mod, "DRAIN_SECONDS", 0.01)
    conn, transport = opened(State.R_OPEN)
    conn.in_flight = 1
    INPUTS[Event.DPR](conn)
    await asyncio.sleep(0.05)
    assert conn.state is State.CLOSED and transport.closing
    assert decode_header(bytes(transport.written)).command_code == C.CC_DISCONNECT_PEER


async def test_our_dpr_answered_closes_and_calls_back() -> None:
    done: list[bool] = []
    conn, transport = opened(State.R_OPEN)
    conn.disconnect(lambda: done.append(True))
    assert conn.state is State.CLOSING
    INPUTS[Event.DPA](conn)
    assert conn.state is State.CLOSED and transport.closing
    conn.connection_lost(None)
    assert done == [True]


async def test_at_max_connections_the_oldest_silent_connection_is_aborted() -> None:
    server = fake_server(max_connections=1)
    old = PeerConnection(server)
    old_transport = FakeTransport()
    old.connection_made(old_transport)
    new = PeerConnection(server)
    new.connection_made(FakeTransport())
    assert old.state is State.CLOSED and old_transport.aborted
    assert server.peers == {new}


async def test_an_unanswered_dwr_closes_after_one_more_quiet_interval() -> None:
    conn, transport = opened(State.R_OPEN)
    conn._last_rx = time.monotonic() - 60
    conn._watchdog_tick()  # OKAY, quiet: a DWR
    await asyncio.sleep(0)
    assert decode_header(bytes(transport.written)).command_code == C.CC_DEVICE_WATCHDOG
    assert conn.watchdog is Watch.OKAY and conn._dwr_outstanding
    conn._watchdog_tick()  # still quiet, the DWR pending: closed (SUSPECT folded into DOWN)
    assert conn.watchdog is Watch.DOWN and conn.state is State.CLOSED and transport.closing
