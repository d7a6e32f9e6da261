"""The load-generating Diameter client: C connections, sessions bound to a connection, open or
closed loop.

Open loop (rate given): request slots are laid on a timetable at the offered rate; each slot is
sent by the next connection in turn and its latency is measured from the slot's scheduled time,
so a server (or client) that falls behind shows it in the percentiles instead of hiding it
(coordinated omission). Closed loop: each connection keeps W requests in flight, latency from send.

Per request the client copies a template and patches it (templates.py), and reads the answer with
one flat scan (wire.scan_answer). Every run draws a fresh run id, part of each of its Session-Ids,
and a random End-to-End base, so a run against a live server never repeats an earlier run's
Session-Ids (the server keys duplicates on Session-Id and CC-Request-Number) nor, as far as 32
random bits go, its End-to-End ids (what a relay in between may key duplicates on). All the writes produced while handling one read, or one timer
tick, go out in one transport.write.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, cast

from bench import wire
from bench.histogram import Histogram
from bench.peer_pydiameter import client_host
from bench.templates import Template, cer_frame, make_templates, new_run_id, session_tail
from bench.workload import (
    EVENT,
    INITIAL,
    TERMINATION,
    UPDATE,
    Mix,
    Service,
    SessionPicker,
    account_id,
)
from ocs.heap import freeze_warm_heap

SUCCESS = 2001
KIND_NAMES = {INITIAL: "CCR-I", UPDATE: "CCR-U", TERMINATION: "CCR-T", EVENT: "CCR-E"}


@dataclass(slots=True)
class LoadSpec:
    connections: int = 16
    in_flight: int = 4                 # closed loop: requests in flight per connection
    rate: float | None = None          # open loop: offered requests/s; None = closed loop
    duration: float = 10.0             # seconds of sending (warm-up included)
    warmup: float = 1.0                # seconds whose requests are left out of the figures
    max_requests: int | None = None
    timeout: float = 5.0               # per request
    accounts: int = 1000
    mix: Mix = field(default_factory=Mix)
    seed: int = 1
    origin_host: str = "bench.client"
    origin_realm: str = "bench"
    destination_realm: str = "ocs"
    progress: bool = True
    label: str = "run"
    run_id: str | None = None          # in every Session-Id; None = a fresh random one per run


@dataclass(slots=True)
class Session:
    conn: int
    tail: bytes
    service: Service
    account: int
    subscriber: bytes
    updates_left: int
    start: int                 # unix seconds
    number: int = 0
    used: int = 0              # units in successfully answered reports
    granted: int = -1          # last grant, -1 = none seen
    uncertain: int = 0         # units in reports whose answer never came


@dataclass(slots=True)
class Usage:
    """One finished (or cut-off) session's usage, the input of the conservation check."""

    account: int
    rating_group: int
    unit: str
    units: int
    start: int
    uncertain: int


@dataclass(slots=True)
class RunResult:
    label: str
    spec: dict[str, Any]
    run_id: str = ""
    sent: int = 0
    answered: int = 0                      # answers to requests sent after the warm-up
    seconds: float = 0.0                   # measured window
    histogram: Histogram = field(default_factory=Histogram)
    result_codes: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[int] = field(default_factory=Counter)
    errors: int = 0                        # answers with a non-2001 Result-Code (any MSCC)
    timeouts: int = 0
    late: int = 0                          # answers that came after their timeout
    connect_errors: int = 0
    series: list[dict[str, Any]] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    by_code: dict[int, Histogram] = field(default_factory=dict)  # message Result-Code -> latency

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "run_id": self.run_id, "spec": self.spec, "sent": self.sent,
                "answered": self.answered, "seconds": round(self.seconds, 3),
                "throughput": round(self.throughput, 1),
                "latency_us": self.histogram.summary(),
                "result_codes": {str(k): v for k, v in sorted(self.result_codes.items())},
                "by_kind": dict(self.by_kind), "errors": self.errors,
                "timeouts": self.timeouts, "late": self.late,
                "connect_errors": self.connect_errors, "series": self.series,
                "histogram": self.histogram.to_dict(),
                "latency_us_by_code": {str(k): h.summary() for k, h in sorted(self.by_code.items())}}


class _Conn(asyncio.Protocol):
    __slots__ = ("buf", "cea", "closed", "engine", "index", "origin_host", "out", "pending",
                 "ready", "session_count", "templates", "transport")

    def __init__(self, engine: _Engine, index: int) -> None:
        self.engine = engine
        self.index = index
        spec = engine.spec
        # one Origin-Host per connection, as distinct gateways would have (python-diameter needs it)
        self.origin_host = client_host(index, spec.origin_host)
        self.templates: dict[tuple[str, int], Template] = make_templates(
            origin_host=self.origin_host, origin_realm=spec.origin_realm,
            destination_realm=spec.destination_realm, run_id=engine.run_id)
        self.buf = bytearray()
        self.out: list[bytes | bytearray] = []
        self.pending: dict[int, tuple[int, Session, int, int]] = {}  # hbh -> sched_ns, session, kind, used
        self.ready: deque[Session] = deque()
        self.transport: asyncio.Transport | None = None
        self.cea: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.session_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP connection's transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.cea.done():
            self.cea.set_exception(ConnectionError("connection closed before CEA"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            frames = wire.split_frames(self.buf)
        except ValueError:
            if self.transport is not None:  # always: data comes after connection_made
                self.transport.close()
            return
        engine = self.engine
        for frame in frames:
            engine.on_frame(self, frame)
        if self.out:
            self.flush()

    def flush(self) -> None:
        out = self.out
        if out and not self.closed:
            transport = self.transport
            assert transport is not None  # set by connection_made before anything is sent
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()


class _Engine:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.run_id = spec.run_id if spec.run_id is not None else new_run_id()
        self.picker = SessionPicker(spec.mix, spec.accounts, spec.seed)
        self.result = RunResult(spec.label, _spec_dict(spec), self.run_id)
        self.conns: list[_Conn] = []
        self.hbh = 0x100
        # End-to-End = hop-by-hop + this; RFC 6733 3: low 12 bits of the time, then 20 random bits
        self.e2e_base = ((int(time.time()) & 0xFFF) << 20) | secrets.randbits(20)
        self.closed_loop = spec.rate is None
        self.sending = False
        self.start_ns = 0
        self.measure_from_ns = 0
        self.last_answer_ns = 0
        self.interval = Histogram()
        self.interval_answered = 0
        self.interval_errors = 0
        self.subscribers = [account_id(i).encode() for i in range(spec.accounts)]
        self.timeout_ns = int(spec.timeout * 1e9)

    # -- sending ------------------------------------------------------------------------------
    def new_session(self, conn: _Conn) -> Session:
        picker = self.picker
        service = picker.service()
        acct = picker.account()
        conn.session_count += 1
        return Session(conn.index, session_tail(conn.index, conn.session_count), service, acct,
                       self.subscribers[acct], picker.updates(service), int(time.time()))

    def send_next(self, conn: _Conn, sched_ns: int) -> None:
        session = conn.ready.popleft() if conn.ready else self.new_session(conn)
        service = session.service
        if session.number == 0:
            kind = EVENT if service.name == "sms" else INITIAL
            used = 0
        else:
            kind = UPDATE if session.updates_left > 0 else TERMINATION
            if kind == UPDATE:
                session.updates_left -= 1
            used = self.picker.usage(service)
            if session.granted >= 0:
                used = min(used, session.granted)
        self.hbh = hbh = (self.hbh + 1) & 0xFFFFFFFF
        frame = conn.templates[(service.name, kind)].render(
            hbh, (hbh + self.e2e_base) & 0xFFFFFFFF, session.tail, session.number, session.subscriber, used)
        conn.out.append(frame)
        conn.pending[hbh] = (sched_ns, session, kind, used)
        self.result.sent += 1

    # -- receiving ----------------------------------------------------------------------------
    def on_frame(self, conn: _Conn, frame: bytes) -> None:
        if frame[4] & wire.FLAG_REQUEST:
            self.answer_peer_request(conn, frame)
            return
        hbh = int.from_bytes(frame[12:16], "big")
        entry = conn.pending.pop(hbh, None)
        if entry is None:
            if not conn.cea.done():
                conn.cea.set_result(frame)
            else:
                self.result.late += 1
            return
        now = time.perf_counter_ns()
        sched_ns, session, kind, used = entry
        result, mscc_result, granted = wire.scan_answer(frame)
        ok = result == SUCCESS and mscc_result in (0, SUCCESS)
        res = self.result
        self.last_answer_ns = now
        if sched_ns >= self.measure_from_ns:
            lat = (now - sched_ns) // 1000
            res.histogram.record(lat)
            by_code = res.by_code.get(result)
            if by_code is None:
                by_code = res.by_code[result] = Histogram()
            by_code.record(lat)
            res.answered += 1
            res.result_codes[mscc_result if result == SUCCESS and mscc_result else result] += 1
            res.by_kind[kind] += 1
            if not ok:
                res.errors += 1
        self.interval.record((now - sched_ns) // 1000)
        self.interval_answered += 1
        if not ok:
            self.interval_errors += 1
        if ok:
            if kind == EVENT:
                session.used += granted if granted >= 0 else session.service.requested
            else:
                session.used += used
            session.granted = granted
        session.number += 1
        if not ok or kind in (TERMINATION, EVENT):
            self.finish(session)
        else:
            conn.ready.append(session)
        if self.closed_loop and self.sending:
            self.send_next(conn, time.perf_counter_ns())

    def answer_peer_request(self, conn: _Conn, frame: bytes) -> None:
        """Answer the server's DWR / DPR so it keeps (or cleanly drops) the connection."""
        from protocol.base import encode_dpa, encode_dwa
        from protocol.records import DPA, DWA

        command = int.from_bytes(frame[5:8], "big")
        hbh = int.from_bytes(frame[12:16], "big")
        e2e = int.from_bytes(frame[16:20], "big")
        spec = self.spec
        if command == wire.CMD_DWR:
            conn.out.append(encode_dwa(DWA(origin_host=conn.origin_host,
                                           origin_realm=spec.origin_realm, origin_state_id=1,
                                           result_code=SUCCESS), hbh, e2e))
        elif command == wire.CMD_DPR:
            conn.out.append(encode_dpa(DPA(origin_host=conn.origin_host,
                                           origin_realm=spec.origin_realm, result_code=SUCCESS),
                                       hbh, e2e))

    def finish(self, session: Session) -> None:
        if session.used or session.uncertain:
            svc = session.service
            self.result.usage.append(Usage(session.account, svc.rating_group, svc.unit,
                                           session.used, session.start, session.uncertain))

    def expire(self, now_ns: int) -> None:
        deadline = now_ns - self.timeout_ns
        res = self.result
        for conn in self.conns:
            pending = conn.pending
            expired = []
            for hbh, entry in pending.items():
                if entry[0] > deadline:
                    break
                expired.append(hbh)
            for hbh in expired:
                _sched, session, kind, used = pending.pop(hbh)
                res.timeouts += 1
                session.uncertain += used if kind != EVENT else session.service.requested
                self.finish(session)

    def in_flight(self) -> int:
        return sum(len(c.pending) for c in self.conns)


def _spec_dict(spec: LoadSpec) -> dict[str, Any]:
    return {"connections": spec.connections, "in_flight": spec.in_flight, "rate": spec.rate,
            "duration": spec.duration, "warmup": spec.warmup, "max_requests": spec.max_requests,
            "timeout": spec.timeout, "accounts": spec.accounts, "seed": spec.seed,
            "mix": {k: getattr(spec.mix, k) for k in spec.mix.__dataclass_fields__}}


async def _connect(engine: _Engine, host: str, port: int, index: int, timeout: float) -> _Conn:
    loop = asyncio.get_running_loop()
    transport, conn = await asyncio.wait_for(
        loop.create_connection(lambda: _Conn(engine, index), host, port), timeout)
    spec = engine.spec
    transport.write(cer_frame(conn.origin_host, spec.origin_realm, hop_by_hop=index + 1))
    cea = await asyncio.wait_for(conn.cea, timeout)
    result, _m, _g = wire.scan_answer(cea)
    if result != SUCCESS:
        transport.close()
        raise ConnectionError(f"CER refused with Result-Code {result}")
    return conn


async def run_load(host: str, port: int, spec: LoadSpec) -> RunResult:
    """Drive one bounded run against host:port and return its figures."""
    engine = _Engine(spec)
    res = engine.result
    connect_timeout = max(spec.timeout, 5.0)
    outcomes = await asyncio.gather(
        *(_connect(engine, host, port, i, connect_timeout) for i in range(spec.connections)),
        return_exceptions=True)
    for out in outcomes:
        if isinstance(out, BaseException):
            res.connect_errors += 1
        else:
            engine.conns.append(out)
    if not engine.conns:
        first = next(o for o in outcomes if isinstance(o, BaseException))
        raise ConnectionError(f"no connection to {host}:{port}: {first}")

    freeze_warm_heap()  # no full collection of the set-up's objects in the middle of the run
    engine.start_ns = start = time.perf_counter_ns()
    engine.measure_from_ns = start + int(spec.warmup * 1e9)
    end_ns = start + int(spec.duration * 1e9)
    max_req = spec.max_requests if spec.max_requests is not None else 1 << 62
    engine.sending = True
    if engine.closed_loop:
        # the first W per connection; every answer then sends the next (in _Engine.on_frame)
        for conn in engine.conns:
            for _ in range(spec.in_flight):
                engine.send_next(conn, start)
            conn.flush()
    next_report = start + 1_000_000_000
    next_expire = start + 100_000_000
    sent_slots = 0
    period_ns = 1e9 / spec.rate if spec.rate else 0.0
    conns = engine.conns
    n_conns = len(conns)
    while True:
        now = time.perf_counter_ns()
        if now >= end_ns or res.sent >= max_req:
            break
        if not engine.closed_loop:
            due = min(int((now - start) / period_ns) + 1, max_req - res.sent + sent_slots)
            while sent_slots < due:
                conn = conns[sent_slots % n_conns]
                if not conn.closed:
                    engine.send_next(conn, start + int(sent_slots * period_ns))
                sent_slots += 1
            for conn in conns:
                conn.flush()
        if now >= next_expire:
            engine.expire(now)
            next_expire = now + 100_000_000
        if now >= next_report:
            _report_second(engine, now)
            next_report += 1_000_000_000
        if all(c.closed for c in conns):
            break
        # 1 ms, not less: libuv timers count whole milliseconds, and uvloop runs a shorter sleep
        # as 0, a busy spin (measured: sleep(0.0005) woke 322,000 times a second and took a core,
        # which on this machine slowed the server under test ~1.6x). Slots sent up to 1 ms late
        # still count their latency from their scheduled time.
        await asyncio.sleep(0.001 if not engine.closed_loop else 0.05)
    engine.sending = False
    stop_ns = time.perf_counter_ns()
    # drain: wait for what is in flight, bounded by the request timeout
    drain_until = stop_ns + engine.timeout_ns + 100_000_000
    while engine.in_flight() and time.perf_counter_ns() < drain_until:
        if all(c.closed for c in conns):
            break
        await asyncio.sleep(0.01)
        engine.expire(time.perf_counter_ns())
    engine.expire(time.perf_counter_ns() + engine.timeout_ns + 1)  # whatever is left timed out
    for conn in conns:
        for session in conn.ready:
            engine.finish(session)
        conn.ready.clear()
        if conn.transport is not None:
            conn.transport.close()
    last = max(engine.last_answer_ns, engine.measure_from_ns)
    res.seconds = max(0.0, (min(last, stop_ns + engine.timeout_ns) - engine.measure_from_ns) / 1e9)
    if res.seconds == 0.0:
        res.seconds = (stop_ns - engine.measure_from_ns) / 1e9
    if spec.progress:
        print(file=sys.stderr)
    await asyncio.sleep(0)
    return res


def _report_second(engine: _Engine, now: int) -> None:
    res = engine.result
    t = round((now - engine.start_ns) / 1e9)
    h = engine.interval
    point = {"t": t, "answered": engine.interval_answered, "errors": engine.interval_errors,
             "p50_us": h.percentile(50), "p99_us": h.percentile(99), "max_us": h.max,
             "in_flight": engine.in_flight(), "timeouts": res.timeouts}
    res.series.append(point)
    engine.interval = Histogram()
    engine.interval_answered = 0
    engine.interval_errors = 0
    if engine.spec.progress:
        line = (f"\r[{res.label}] {t:>3}s  {point['answered']:>7} answered/s  "
                f"p50 {point['p50_us'] / 1000:7.2f} ms  p99 {point['p99_us'] / 1000:7.2f} ms  "
                f"in flight {point['in_flight']:>5}  errors {res.errors}  "
                f"timeouts {res.timeouts}   ")
        sys.stderr.write(line)
        sys.stderr.flush()


def run(host: str, port: int, spec: LoadSpec) -> RunResult:
    """run_load on a fresh uvloop event loop (the default loop when uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(run_load(host, port, spec))
    return uvloop.run(run_load(host, port, spec))
