"""The batch scanner against decode_ccr, the reference: it may only say yes where decode_ccr agrees.

For every frame, valid or mutated: if decode_ccr refuses it, the scanner must not take it; if the
scanner takes it, to_ccr(frame, row) must equal decode_ccr(frame) field for field. And it must take
the common shapes (else the fast path would be a slow path with extra steps).
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import build as B
from protocol import ccr_batch as S
from protocol.ccr import decode_ccr, encode_ccr
from protocol.errors import DiameterError
from protocol.records import CCR, MSCCRequest, Units

ASCII = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
ANY_TEXT = st.text(min_size=0, max_size=12)
U32 = st.integers(0, 2**32 - 1)
U64 = st.one_of(st.integers(0, 2**40), st.integers(0, 2**64 - 1))


def _units(used: bool) -> st.SearchStrategy[Units]:
    opt32, opt64 = st.none() | U32, st.none() | U64
    return st.builds(Units, time=opt32, total_octets=opt64, input_octets=opt64, output_octets=opt64,
                     service_specific_units=opt64,
                     reporting_reason=st.none() | st.integers(0, 9) if used else st.none(),
                     tariff_change_usage=st.none() | st.integers(0, 2) if used else st.none())


MSCC = st.builds(MSCCRequest, rating_group=st.none() | U32,
                 service_identifiers=st.lists(U32, max_size=2),
                 requested=st.none() | _units(False), used=st.lists(_units(True), max_size=2),
                 reporting_reason=st.none() | st.integers(0, 9))
SUB = st.tuples(st.integers(0, 4), st.one_of(ASCII, st.text(st.characters(min_codepoint=0x30,
                                                                           max_codepoint=0x39),
                                                             min_size=1, max_size=15)))
EXTRA = st.sampled_from([
    b"",
    B.group(284, B.utf8(280, "relay.test")),  # Proxy-Info (grouped, not read): skipped by length
    B.u32(9999, 7),                        # unknown AVP without the M bit: skipped
    b"\0\0\x27\x0f\x40\0\0\x0c\0\0\0\x07",  # unknown AVP 9999 with the M bit: decode_ccr refuses
])


@st.composite
def ccrs(draw: st.DrawFn) -> tuple[CCR, bytes]:
    c = CCR(session_id=draw(ASCII), origin_host=draw(ASCII), origin_realm=draw(ASCII),
            destination_realm=draw(ASCII), destination_host=draw(st.none() | ASCII),
            auth_application_id=draw(st.sampled_from([4, 4, 4, 1])),
            service_context_id=draw(ASCII), request_type=draw(st.integers(1, 4)),
            request_number=draw(U32), requested_action=draw(st.none() | st.integers(0, 3)),
            event_timestamp=draw(st.none() | st.integers(1_600_000_000, 2_000_000_000)),
            subscription_ids=draw(st.lists(SUB, max_size=3)),
            user_name=draw(st.none() | ASCII | ANY_TEXT.filter(bool)),
            origin_state_id=draw(st.none() | U32),
            termination_cause=draw(st.none() | st.integers(1, 8)),
            multiple_services_indicator=draw(st.none() | st.integers(0, 1)),
            service_identifier=draw(st.none() | U32),
            mscc=draw(st.lists(MSCC, max_size=5)))
    return c, encode_ccr(c, draw(U32), draw(U32), draw(st.booleans()), draw(EXTRA))


def check(frame: bytes) -> bool:
    """The scanner's row against decode_ccr; True if the scanner took it."""
    row = S.scan([frame])[0]
    try:
        ref = decode_ccr(frame)
    except DiameterError:
        assert row[S.F_OK] == 0, frame.hex()
        return False
    if row[S.F_OK]:
        assert S.to_ccr(frame, row) == ref, frame.hex()
        return True
    return False


def modelled(c: CCR, frame: bytes) -> bool:
    """The shapes the scanner promises to take."""
    def ascii_ok(t: str | None) -> bool:
        return t is None or t.isascii()

    def units_ok(u: Units | None) -> bool:
        return u is None or all(x is None or x < 2**63 for x in
                                (u.total_octets, u.input_octets, u.output_octets, u.service_specific_units))
    return (len(c.mscc) <= S.MAX_MSCC and len(c.subscription_ids) <= S.MAX_SUBS
            and ascii_ok(c.user_name) and b"\x40\0\0\x0c" not in frame[-12:]
            and all(len(m.used) <= 1 and len(m.service_identifiers) <= 1 and units_ok(m.requested)
                    and all(units_ok(u) for u in m.used) for m in c.mscc))


@settings(max_examples=400, deadline=None)
@given(ccrs())
def test_valid_frames_agree_and_common_shapes_are_taken(case: tuple[CCR, bytes]) -> None:
    c, frame = case
    taken = check(frame)
    if modelled(c, frame) and c.auth_application_id == 4:
        assert taken, c


@settings(max_examples=400, deadline=None)
@given(ccrs(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
       st.booleans())
def test_mutated_frames_never_taken_against_the_decoder(case: tuple[CCR, bytes],
                                                       edits: list[tuple[int, int]], fix_length: bool) -> None:
    frame = bytearray(case[1])
    for pos, value in edits:
        frame[pos % len(frame)] = value
    if fix_length:  # keep the header consistent so the mutation reaches the AVPs
        frame[1:4] = len(frame).to_bytes(3, "big")
    check(bytes(frame))


def test_seeded_fuzz_of_a_typical_ccr_u() -> None:
    """20,000 mutations of a CCR-U with two MSCCs; prints how many the scanner took."""
    rng = random.Random(20261204)
    base = encode_ccr(CCR("pgw.test;1;2", "pgw.test", "test", "ocs", None, 4, "32251@3gpp.org", 2, 7,
                          subscription_ids=[(0, "4915112345678"), (1, "262011234567890")],
                          mscc=[MSCCRequest(10, [], Units(total_octets=1 << 20),
                                            [Units(total_octets=123_456, reporting_reason=2)]),
                                MSCCRequest(20, [1], Units(time=60), [Units(time=30)], 3)]), 1, 2)
    assert check(base)
    frames = []
    for _ in range(20_000):
        f = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            f[rng.randrange(20, len(f))] = rng.randrange(256)
        if rng.random() < 0.5:
            del f[rng.randrange(20, len(f)):]
            f[1:4] = len(f).to_bytes(3, "big")
        frames.append(bytes(f))
    rows = S.scan(frames)
    taken = refused = 0
    for f, row in zip(frames, rows, strict=True):
        try:
            ref = decode_ccr(f)
        except DiameterError:
            refused += 1
            assert row[S.F_OK] == 0, f.hex()
            continue
        if row[S.F_OK]:
            taken += 1
            assert S.to_ccr(f, row) == ref, f.hex()
    print(f"seeded fuzz: {taken} taken, {refused} refused by decode_ccr, of {len(frames)}")
    assert taken > 500 and refused > 1000


def test_a_batch_gives_the_rows_of_its_frames_one_by_one() -> None:
    frames = [encode_ccr(CCR(f"s;{i}", "h", "r", "d", None, 4, "c", 2, i,
                             mscc=[MSCCRequest(i, [], Units(time=i), [])]), i, i) for i in range(50)]
    frames[7] = frames[7][:-3]  # a broken one in the middle does not disturb its neighbours
    batch = S.scan(frames)
    for i, f in enumerate(frames):
        assert np.array_equal(batch[i], S.scan([f])[0])
    assert batch[:, S.F_OK].sum() == 49 and batch[7, S.F_OK] == 0
    assert S.scan([]).shape == (0, S.WIDTH)


def test_the_load_generators_requests_are_taken() -> None:
    """Every request shape the benchmark sends (data, voice, SMS; CCR-I/U/T/EVENT) is a fast-path
    shape: the scanner takes each and agrees with decode_ccr."""
    from bench.templates import make_templates

    templates = make_templates(origin_host="pgw.test", origin_realm="test", destination_realm="ocs",
                               run_id="r1")
    assert len(templates) == 7
    for kind, t in templates.items():
        assert check(t.frame), kind
