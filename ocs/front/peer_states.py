"""The responder's peer and watchdog state machines as data (RFC 6733 §5.6, RFC 3539 §3.4.1).

Everything that decides a state lives in this file (h11's rule for its `_state.py`): `PEER` and
`WATCHDOG` map (state, event) to a `Step` (action, next state). `ocs.front.peer` turns bytes and
timers into events, looks the step up with `peer_step` / `watchdog_step`, sets the next state and
runs the action; an action never sets a state itself (it may fire a further event). Nothing here
does I/O, so the tables are tested without sockets (tests/front/test_peer_states.py).

We are a responder only: a gateway connects to us, we never connect out. So of RFC 6733 §5.6 we
implement Closed (for us: a connection accepted, no CER yet; §5.6.1 has that wait outside the
machine, we keep it as the state WAIT_CER), R-Open and Closing, and none of the initiator's
states (Wait-Conn-Ack, Wait-I-CEA, I-Open) or the election's (Wait-Conn-Ack/Elect,
Wait-Returns): with no outgoing connection there is nothing to elect between. R-Conn-CER on an
open peer's *other* connection (R-Reject) is not implemented either: each connection is its own
machine, and two connections from one Origin-Host are both served (their in-flight bound is per
Origin-Host, over all its connections, see ocs.front.dispatch).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class State(StrEnum):
    """The peer's states. The values are the RFC's names where one applies."""

    WAIT_CER = "Wait-CER"   # RFC Closed before R-Conn-CER: accepted, the CER not yet received
    R_OPEN = "R-Open"
    CLOSING = "Closing"     # our DPR is sent (Stop); requests are still answered until its DPA
    DRAINING = "Draining"   # DPR and DPA done or due: answers in flight go out, then we close
    CLOSED = "Closed"       # the transport is closing or gone: nothing more is read


class Event(StrEnum):
    """What happens to a peer. Guards run before the table: Process-CER decides CER or
    CER_REFUSED, the command code decides DWR / DPR / MESSAGE, the R bit request or answer."""

    CER = "R-Conn-CER"            # a CER that Process-CER accepts (on an open connection: R-Rcv-CER)
    CER_REFUSED = "CER refused"   # one it refuses: too large, unreadable, not allowed, no common
                                  # application, or another Origin-Host than the first CER's
    DWR = "R-Rcv-DWR"
    DPR = "R-Rcv-DPR"
    MESSAGE = "R-Rcv-Message"     # any other request: a CCR, or a command we do not support
    DPA = "R-Rcv-DPA"
    ANSWER = "R-Rcv-DWA"          # any other answer: a DWA, or one nobody asked for
    STOP = "Stop"                 # shutdown: disconnect this peer
    DRAINED = "Drained"           # its last request in flight was answered
    TIMEOUT = "Timeout"           # DRAIN_SECONDS after the DPR exchange: close anyway
    NO_CER = "No CER"             # the watchdog interval passed and no CER came
    ABORT = "Abort"               # dropped at max_connections before any CER
    DISC = "Disc"                 # we end the connection: an error, a refusal, the end of shutdown
    PEER_DISC = "R-Peer-Disc"     # the transport is gone


class Action(StrEnum):
    """What the peer does on a step; ocs.front.peer has one method per action."""

    NONE = "nothing"
    ACCEPT_CER = "R-Accept, Process-CER, R-Snd-CEA"
    SEND_CEA = "R-Snd-CEA"                          # a repeated CER: answered, nothing changes
    REFUSE_CER = "R-Snd-CEA (error), R-Disc"
    REJECT = "answer 3010 UNKNOWN_PEER, R-Disc"     # a request before the CER
    PROCESS = "Process"                             # a CCR to the engine; 3001 / 3007 otherwise
    SEND_DWA = "Process-DWR, R-Snd-DWA"
    HOLD_DPA = "R-Snd-DPA once drained"             # RFC 6733 §5.4: answers in flight first
    REFUSE = "answer 3002 UNABLE_TO_DELIVER"        # a request after the DPR
    SEND_DPR = "R-Snd-DPR"
    NO_DPR = "no DPR to send: done at once"
    DRAIN = "close once drained"                    # our DPR answered, answers still in flight
    FINISH = "R-Snd-DPA if held, R-Disc"
    CLOSE_NO_CER = "Error, R-Disc"
    ABORT = "abort the transport"
    DISC = "R-Disc"
    CLEANUP = "cleanup"                             # the transport is gone: forget the peer


class Step(NamedTuple):
    action: Action
    next: State


S, E, A = State, Event, Action

# RFC 6733 §5.6, the rows of a responder (state, event, action, next state):
#
#   Closed       R-Conn-CER     R-Accept,        R-Open
#                               Process-CER,
#                               R-Snd-CEA
#   R-Open       Send-Message   R-Snd-Message    R-Open
#                R-Rcv-Message  Process          R-Open
#                R-Rcv-DWR      Process-DWR,     R-Open
#                               R-Snd-DWA
#                R-Rcv-DWA      Process-DWA      R-Open
#                R-Conn-CER     R-Reject         R-Open
#                Stop           R-Snd-DPR        Closing
#                R-Rcv-DPR      R-Snd-DPA        Closing
#                R-Peer-Disc    R-Disc           Closed
#   Closing      R-Rcv-DPA      R-Disc           Closed
#                Timeout        Error            Closed
#                R-Peer-Disc    R-Disc           Closed
#
# Where we differ, and why:
# - Send-Message is not an event: a responder sends only answers, written as they are ready.
# - R-Conn-CER / R-Reject concern another connection; here each connection is its own machine.
# - A CER on this open connection (R-Rcv-CER, a row of I-Open and Wait-Returns, not of R-Open)
#   is answered with a CEA and changes nothing; one naming another Origin-Host is refused and
#   the connection closed: it may not turn into another peer's (in-flight bound, allowlist).
# - R-Rcv-DPR holds the DPA until the answers of requests already in flight are sent (their
#   debits are made: the peer must see them) and we close once it is out (R-Disc): DRAINING.
#   Requests meanwhile get 3002. A peer that never reads is cut off after DRAIN_SECONDS.
# - After Stop (our DPR, at shutdown) requests are still answered (3004: the dispatcher is
#   stopping, so the gateway fails over); R-Rcv-DPA closes at once or, with answers in flight,
#   once they are out (DRAINING again).
# - Wait-CER is not a row: RFC 6733 §5.6.1 accepts connections and awaits the CER outside the
#   machine. A request other than a CER there gets 3010 and the connection is closed; no CER
#   within the watchdog interval closes it too, so silent sockets cannot hold connections.
# - A framing or fatal header error closes the connection from any state (DISC).
_OPEN_ROWS: dict[Event, Step] = {
    E.CER: Step(A.SEND_CEA, S.R_OPEN),
    E.CER_REFUSED: Step(A.REFUSE_CER, S.CLOSED),
    E.MESSAGE: Step(A.PROCESS, S.R_OPEN),
    E.DWR: Step(A.SEND_DWA, S.R_OPEN),
    E.ANSWER: Step(A.NONE, S.R_OPEN),            # Process-DWA: the watchdog saw it already
    E.STOP: Step(A.SEND_DPR, S.CLOSING),
    E.DPR: Step(A.HOLD_DPA, S.DRAINING),
    E.DISC: Step(A.DISC, S.CLOSED),
    E.PEER_DISC: Step(A.CLEANUP, S.CLOSED),
}

PEER: dict[State, dict[Event, Step]] = {
    S.WAIT_CER: {
        E.CER: Step(A.ACCEPT_CER, S.R_OPEN),
        E.CER_REFUSED: Step(A.REFUSE_CER, S.CLOSED),
        E.MESSAGE: Step(A.REJECT, S.CLOSED),
        E.DWR: Step(A.REJECT, S.CLOSED),
        E.DPR: Step(A.REJECT, S.CLOSED),
        E.NO_CER: Step(A.CLOSE_NO_CER, S.CLOSED),
        E.STOP: Step(A.NO_DPR, S.WAIT_CER),
        E.ABORT: Step(A.ABORT, S.CLOSED),
        E.DISC: Step(A.DISC, S.CLOSED),
        E.PEER_DISC: Step(A.CLEANUP, S.CLOSED),
    },
    S.R_OPEN: _OPEN_ROWS,
    S.CLOSING: {
        **{event: Step(step.action, S.CLOSING if step.next is S.R_OPEN else step.next)
           for event, step in _OPEN_ROWS.items()},
        E.DPA: Step(A.DRAIN, S.DRAINING),
    },
    S.DRAINING: {
        E.CER: Step(A.SEND_CEA, S.DRAINING),
        E.CER_REFUSED: Step(A.REFUSE_CER, S.CLOSED),
        E.MESSAGE: Step(A.REFUSE, S.DRAINING),
        E.DPR: Step(A.REFUSE, S.DRAINING),
        E.DWR: Step(A.SEND_DWA, S.DRAINING),
        E.ANSWER: Step(A.NONE, S.DRAINING),
        E.STOP: Step(A.NO_DPR, S.DRAINING),
        E.DRAINED: Step(A.FINISH, S.CLOSED),
        E.TIMEOUT: Step(A.FINISH, S.CLOSED),
        E.DISC: Step(A.DISC, S.CLOSED),
        E.PEER_DISC: Step(A.CLEANUP, S.CLOSED),
    },
    S.CLOSED: {
        E.STOP: Step(A.NO_DPR, S.CLOSED),
        E.DISC: Step(A.DISC, S.CLOSED),          # flushes; the transport closes once
        E.PEER_DISC: Step(A.CLEANUP, S.CLOSED),
    },
}

# An event without a row changes nothing, as the RFC's tables have no row for it: a timer of a
# state already left (DRAINED, TIMEOUT, NO_CER after the CER), an answer nobody waits for (a DPA
# before our DPR: answers not matching a request are dropped), anything once Closed.
_STAY = {state: Step(A.NONE, state) for state in State}


def peer_step(state: State, event: Event) -> Step:
    return PEER[state].get(event) or _STAY[state]


class Watch(StrEnum):
    """The watchdog's states (RFC 3539 §3.4.1) a responder uses."""

    INITIAL = "INITIAL"
    OKAY = "OKAY"
    DOWN = "DOWN"


class WatchEvent(StrEnum):
    CONNECTION_UP = "Connection up"
    RECEIVE = "Receive DWA or non-DWA"          # any whole message
    EXPIRED = "Timer expires & !Pending"
    EXPIRED_PENDING = "Timer expires & Pending"
    CONNECTION_DOWN = "Connection down"         # closed or lost: no more watchdog messages


class WatchAction(StrEnum):
    NONE = "nothing"
    SET_WATCHDOG = "SetWatchdog()"
    RECEIVED = "Pending = FALSE, SetWatchdog()"
    SEND_WATCHDOG = "SendWatchdog(), SetWatchdog(), Pending = TRUE"
    CLOSE_CONNECTION = "CloseConnection()"
    STOP = "the timer stops"


class WatchStep(NamedTuple):
    action: WatchAction
    next: Watch


W, WE, WA = Watch, WatchEvent, WatchAction

# RFC 3539 §3.4.1, the rows a responder uses (state, event, actions, new state):
#
#   INITIAL  Connection up     SetWatchdog()          OKAY
#   OKAY     Receive DWA       Pending = FALSE
#                              SetWatchdog()          OKAY
#   OKAY     Receive non-DWA   SetWatchdog()          OKAY
#   OKAY     Timer expires &   SendWatchdog()
#            !Pending          SetWatchdog()
#                              Pending = TRUE         OKAY
#   OKAY     Timer expires &   Failover()
#            Pending           SetWatchdog()          SUSPECT
#   SUSPECT  Timer expires     CloseConnection()
#                              SetWatchdog()          DOWN
#   OKAY     Connection down   Failover()
#                              SetWatchdog()          DOWN
#
# Where we differ, and why:
# - SetWatchdog() on receive is a timestamp, not a new timer: the timer runs every Tw and
#   counts as expired only when nothing was received for Tw (a timer per message would be a
#   call_later per request on the loop thread).
# - Any whole message clears Pending, not only a DWA: traffic proves the peer alive, and a
#   gateway busy sending CCRs is not closed for a DWA stuck behind them (OTP's diameter
#   relaxes the DWA check for a similar reason).
# - SUSPECT is collapsed into DOWN: Failover() and Failback() are a client's (it sends its
#   requests to another peer meanwhile); a responder has no one to fail over to, so a DWR
#   unanswered for Tw closes the connection at once.
# - DOWN is the end: REOPEN and AttemptOpen() are the connecting side's, a new connection is a
#   new machine. There is no jitter on Tw: we send at most one DWR per quiet interval.
# - The timer also runs before the CER: the first expiry there closes the connection (NO_CER).
WATCHDOG: dict[Watch, dict[WatchEvent, WatchStep]] = {
    W.INITIAL: {
        WE.CONNECTION_UP: WatchStep(WA.SET_WATCHDOG, W.OKAY),
    },
    W.OKAY: {
        WE.RECEIVE: WatchStep(WA.RECEIVED, W.OKAY),
        WE.EXPIRED: WatchStep(WA.SEND_WATCHDOG, W.OKAY),
        WE.EXPIRED_PENDING: WatchStep(WA.CLOSE_CONNECTION, W.DOWN),
        WE.CONNECTION_DOWN: WatchStep(WA.STOP, W.DOWN),
    },
    W.DOWN: {},
}

_WATCH_STAY = {state: WatchStep(WA.NONE, state) for state in Watch}


def watchdog_step(state: Watch, event: WatchEvent) -> WatchStep:
    """An event without a row changes nothing: RFC 3539 [5], a closed connection sends no more
    watchdog messages (and a responder does not reopen it)."""
    return WATCHDOG[state].get(event) or _WATCH_STAY[state]
