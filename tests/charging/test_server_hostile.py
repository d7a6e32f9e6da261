"""Hostile values against the real server: each is refused by the decoder with the RFC's answer and
a Failed-AVP holding the AVP as received, before anything reaches the store.

Found by an outside fuzzer: an empty Session-Id or Subscription-Id-Data got 5012 and an ERROR log
line (LMDB refuses an empty key), a Subscription-Id-Type of 4294967295 was answered 2001, and a
10,000-byte Origin-Host was accepted. The bounds live in protocol.dictionary; the expectations
here are written out from the RFCs (and the store's key limits), not read from it.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_harness import account, provision, start_server

from protocol import build as B
from protocol.framer import Framer
from protocol.message import decode_message

ACCOUNT = "491790000001"
MAX_MESSAGE = 65536  # the server's max_message_size (default): past it the stream is unframeable
HDR = struct.Struct(">IIIII")
_sids = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("hostile") / "data"
    provision(data, {ACCOUNT: {"balance": "100000"}})
    srv = start_server(data)
    yield srv
    assert srv.stop() == 0, srv.log()
    assert not error_lines(srv.log()), srv.log()


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]


class Peer:
    """A blocking Diameter peer: CER first (unless told not to), then one request at a time."""

    def __init__(self, server, cer: bool = True) -> None:  # type: ignore[no-untyped-def]
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.framer = Framer(1 << 22)
        self.frames: deque[bytes] = deque()
        self.ids = itertools.count(1)
        if cer:
            answer = self.request(cer_frame(b"hostile.test", b"test", next(self.ids)))
            assert answer is not None and result_code(answer) == 2001

    def request(self, frame: bytes) -> bytes | None:
        """The answer to `frame` (matched by hop-by-hop id), or None once the server has closed."""
        hbh = struct.unpack_from(">I", frame, 12)[0]
        try:
            self.sock.sendall(frame)
        except OSError:
            pass  # closed while we sent: the answer it may have sent first is still readable
        while True:
            while self.frames:
                f = self.frames.popleft()
                if not f[4] & 0x80 and struct.unpack_from(">I", f, 12)[0] == hbh:
                    return f
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return None
            if not data:
                return None
            self.frames.extend(self.framer.feed(data))

    def closed(self) -> bool:
        """True once the server has closed the connection (EOF within the socket timeout)."""
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def cer_frame(host: bytes, realm: bytes, hbh: int) -> bytes:
    return message(257, 0, [B.octets(264, host), B.octets(296, realm), B.address(257, "127.0.0.1"),
                            B.u32(266, 0), B.utf8(269, "hostile", 0), B.u32(258, 4)], hbh)


def message(cmd: int, app: int, avps: list[bytes], hbh: int) -> bytes:
    body = b"".join(avps)
    return HDR.pack(0x01000000 | (20 + len(body)), (0xC0 << 24) | cmd, app, hbh, hbh) + body


def result_code(answer: bytes) -> int:
    return decode_message(answer).find("Result-Code").value


def failed_avp(answer: bytes) -> bytes | None:
    """The payload of the answer's Failed-AVP: the offending AVP(s), as the server put them."""
    f = decode_message(answer).find("Failed-AVP")
    return None if f is None else f.data


def rsu_mscc(*extra: bytes) -> bytes:
    return B.group(456, B.u32(432, 300) + B.group(437, B.u64(417, 1)) + b"".join(extra))


def sub(typ: int, data: bytes) -> bytes:
    return B.group(443, B.i32(450, typ) + B.octets(444, data))


def base_avps(session_id: bytes) -> dict[int, bytes]:
    """A valid CCR-EVENT (one event on rating group 300) by AVP code, in sending order."""
    return {263: B.octets(263, session_id), 264: B.utf8(264, "hostile.test"), 296: B.utf8(296, "test"),
            283: B.utf8(283, "test"), 258: B.u32(258, 4), 461: B.utf8(461, "32251@3gpp.org"),
            416: B.i32(416, 4), 415: B.u32(415, 0), 443: sub(0, ACCOUNT.encode()),
            456: rsu_mscc()}  # fmt: skip


def new_sid() -> bytes:
    return f"hostile.test;{next(_sids)};{id(_sids)}".encode()


def ccr_frame(changes: dict[int, bytes | None], hbh: int) -> bytes:
    """A valid CCR with AVPs replaced (bytes), removed (None) or added (a code not in the base)."""
    avps = base_avps(new_sid())
    for code, avp in changes.items():
        if avp is None:
            avps.pop(code, None)
        else:
            avps[code] = avp
    return message(272, 4, list(avps.values()), hbh)


U32_MAX = struct.pack(">III", 450, 0x4000000C, 0xFFFFFFFF)  # Subscription-Id-Type 4294967295
RR10 = B.u32_3gpp(872, 10)
ZERO = 0x40000008  # flags and length of a zero-filled missing UTF8String AVP (RFC 6733 §7.5)

# (id, changes to the valid CCR, Result-Code, Failed-AVP payload expected)
CASES = [
    ("Session-Id empty", {263: B.octets(263, b"")}, 5004, B.octets(263, b"")),
    ("Session-Id 401 bytes", {263: B.octets(263, b"gw;" + b"1" * 398)}, 5004,
     B.octets(263, b"gw;" + b"1" * 398)),
    ("Session-Id with NUL", {263: B.octets(263, b"gw;\0;1")}, 5004, B.octets(263, b"gw;\0;1")),
    ("Session-Id missing", {263: None}, 5005, struct.pack(">II", 263, ZERO)),
    ("Subscription-Id-Data empty", {443: sub(0, b"")}, 5004, B.group(443, B.octets(444, b""))),
    ("Subscription-Id-Data E.164 of 17 digits", {443: sub(0, b"4" * 17)}, 5004,
     B.group(443, B.octets(444, b"4" * 17))),
    ("Subscription-Id-Data IMSI of 16 digits", {443: sub(1, b"2" * 16)}, 5004,
     B.group(443, B.octets(444, b"2" * 16))),
    ("Subscription-Id-Data NAI of 254 bytes", {443: sub(3, b"n" * 254)}, 5004,
     B.group(443, B.octets(444, b"n" * 254))),
    ("Subscription-Id-Data 10,000 bytes", {443: sub(4, b"p" * 10000)}, 5004,
     B.group(443, B.octets(444, b"p" * 10000))),
    ("Subscription-Id-Data missing", {443: B.group(443, B.i32(450, 0))}, 5005,
     B.group(443, struct.pack(">II", 444, ZERO))),
    ("Subscription-Id-Type 4294967295", {443: B.group(443, U32_MAX + B.utf8(444, ACCOUNT))}, 5004,
     B.group(443, U32_MAX)),
    ("Subscription-Id-Type 5", {443: B.group(443, B.i32(450, 5) + B.utf8(444, ACCOUNT))}, 5004,
     B.group(443, B.i32(450, 5))),
    ("User-Name empty", {443: None, 1: B.octets(1, b"")}, 5004, B.octets(1, b"")),
    ("User-Name 254 bytes", {443: None, 1: B.octets(1, b"u" * 254)}, 5004, B.octets(1, b"u" * 254)),
    ("Origin-Host 10,000 bytes", {264: B.octets(264, b"h" * 10000)}, 5004, B.octets(264, b"h" * 10000)),
    ("Origin-Host 256 bytes", {264: B.octets(264, b"h" * 256)}, 5004, B.octets(264, b"h" * 256)),
    ("Origin-Host empty", {264: B.octets(264, b"")}, 5004, B.octets(264, b"")),
    ("Origin-Realm 256 bytes", {296: B.octets(296, b"r" * 256)}, 5004, B.octets(296, b"r" * 256)),
    ("Origin-Realm empty", {296: B.octets(296, b"")}, 5004, B.octets(296, b"")),
    ("Destination-Realm 256 bytes", {283: B.octets(283, b"d" * 256)}, 5004, B.octets(283, b"d" * 256)),
    ("Destination-Realm empty", {283: B.octets(283, b"")}, 5004, B.octets(283, b"")),
    ("Destination-Host 256 bytes", {293: B.octets(293, b"d" * 256)}, 5004, B.octets(293, b"d" * 256)),
    ("Destination-Host empty", {293: B.octets(293, b"")}, 5004, B.octets(293, b"")),
    ("Service-Context-Id empty", {461: B.octets(461, b"")}, 5004, B.octets(461, b"")),
    ("Service-Context-Id 256 bytes", {461: B.octets(461, b"s" * 256)}, 5004, B.octets(461, b"s" * 256)),
    ("CC-Request-Type 0", {416: B.i32(416, 0)}, 5004, B.i32(416, 0)),
    ("CC-Request-Type 4294967295", {416: B.u32(416, 0xFFFFFFFF)}, 5004, B.u32(416, 0xFFFFFFFF)),
    ("Requested-Action 4", {436: B.i32(436, 4)}, 5004, B.i32(436, 4)),
    ("Multiple-Services-Indicator 2", {455: B.i32(455, 2)}, 5004, B.i32(455, 2)),
    ("Termination-Cause 9", {295: B.i32(295, 9)}, 5004, B.i32(295, 9)),
    ("Reporting-Reason 10 in the MSCC", {456: rsu_mscc(RR10)}, 5004, B.group(456, RR10)),
    ("Reporting-Reason 10 in a USU", {456: rsu_mscc(B.group(446, B.u64(417, 1) + RR10))}, 5004,
     B.group(456, B.group(446, RR10))),
    ("Tariff-Change-Usage 3 in a USU", {456: rsu_mscc(B.group(446, B.i32(452, 3)))}, 5004,
     B.group(456, B.group(446, B.i32(452, 3)))),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "code", "failed"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_hostile_value_is_refused_by_the_decoder(server, changes, code: int, failed: bytes) -> None:  # type: ignore[no-untyped-def]
    before_log, before = len(server.log()), account(server.data, ACCOUNT)
    peer = Peer(server)
    try:
        answer = peer.request(ccr_frame(changes, next(peer.ids)))
        assert answer is not None
        assert result_code(answer) == code
        assert failed_avp(answer) == failed  # the AVP as received, inside its groups (§7.5)
        after = account(server.data, ACCOUNT)
        assert (after.balance, after.seq) == (before.balance, before.seq)  # nothing charged
        ok = peer.request(ccr_frame({}, next(peer.ids)))  # the connection and server go on
        assert ok is not None and result_code(ok) == 2001
    finally:
        peer.close()
    assert not error_lines(server.log()[before_log:])


CER_CASES = [
    ("Origin-Host 256 bytes", b"h" * 256, b"test", B.octets(264, b"h" * 256)),
    ("Origin-Host 10,000 bytes", b"h" * 10000, b"test", B.octets(264, b"h" * 10000)),
    ("Origin-Host empty", b"", b"test", B.octets(264, b"")),
    ("Origin-Realm 256 bytes", b"peer.test", b"r" * 256, B.octets(296, b"r" * 256)),
    ("Origin-Realm empty", b"peer.test", b"", B.octets(296, b"")),
]


@pytest.mark.parametrize(("host", "realm", "failed"), [c[1:] for c in CER_CASES],
                         ids=[c[0] for c in CER_CASES])
def test_cer_with_a_bad_identity_gets_5004_then_the_connection_closes(server, host: bytes,
                                                                      realm: bytes, failed: bytes) -> None:  # type: ignore[no-untyped-def]
    before_log = len(server.log())
    peer = Peer(server, cer=False)
    try:
        answer = peer.request(cer_frame(host, realm, 1))
        assert answer is not None
        assert result_code(answer) == 5004 and failed_avp(answer) == failed
        assert peer.closed()  # RFC 6733 §5.3: a CER that fails is answered, then the transport closed
    finally:
        peer.close()
    assert not error_lines(server.log()[before_log:])


# --- every string the server keeps, any length from 0 to 70,000 bytes -----------------------------

# code -> (most bytes allowed, NUL allowed): RFC 6733 §4.3.1 DiameterIdentity is an FQDN (<= 255,
# no NUL); Session-Id is part of the store's keys (<= 400, NUL is their separator); a NAI
# User-Name <= 253 (RFC 7542); Service-Context-Id <= 255.
STRINGS = {263: (400, False), 264: (255, False), 296: (255, False), 283: (255, False),
           293: (255, False), 461: (255, True), 1: (253, True), 444: (None, True)}  # fmt: skip
SUBSCRIPTION_MOST = {0: 16, 1: 15, 2: 253, 3: 253, 4: 253}  # E.164 15 digits (+ "+"), IMSI 15
LENGTHS = st.sampled_from([0, 1, 15, 16, 17, 253, 254, 255, 256, 400, 401, 511, 512, 65200,
                           65536, 70000]) | st.integers(0, 70000)  # fmt: skip


def test_any_length_of_any_string_gets_a_clean_answer(server) -> None:  # type: ignore[no-untyped-def]
    before_log = len(server.log())
    box = [Peer(server)]
    seen: set[int] = set()

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(sorted(STRINGS)), LENGTHS, st.sampled_from([b"a", b"7", b"\0", b"\xff"]),
           st.integers(0, 4))
    def one(code: int, n: int, fill: bytes, typ: int) -> None:
        peer = box[0]
        payload = fill * n
        if code == 444:  # the only identity: an unknown one is 5030, as it is for any stranger
            changes: dict[int, bytes | None] = {443: sub(typ, payload)}
            most, nul_ok = SUBSCRIPTION_MOST[typ], True
        elif code == 1:
            changes, (most, nul_ok) = {443: None, 1: B.octets(1, payload)}, STRINGS[1]
        else:
            changes, (most, nul_ok) = {code: B.octets(code, payload)}, STRINGS[code]
        frame = ccr_frame(changes, next(peer.ids))
        answer = peer.request(frame)
        if len(frame) > MAX_MESSAGE:  # cannot be framed: answered from its header, then closed
            assert answer is None or result_code(answer) == 5015
            assert peer.closed()
            peer.close()
            box[0] = Peer(server)
            return
        assert answer is not None, (code, n, fill)
        rc = result_code(answer)
        seen.add(rc)
        valid = 1 <= n <= most and fill != b"\xff" and (nul_ok or fill != b"\0")
        if valid:
            assert rc == (5030 if code in (1, 444) else 2001), (code, n, fill, rc)
            return
        assert rc == 5004, (code, n, fill, rc)
        failed = decode_message(answer).find("Failed-AVP")
        assert failed is not None and failed.children
        inner = failed.children[0]
        if code == 444:
            assert inner.code == 443 and inner.children[0].code == 444
            assert inner.children[0].data == payload
        else:
            assert inner.code == code and inner.data == payload

    try:
        one()
        assert box[0].request(ccr_frame({}, next(box[0].ids))) is not None  # still serving
    finally:
        box[0].close()
    assert server.proc.poll() is None
    assert {2001, 5004} <= seen
    assert not error_lines(server.log()[before_log:])
