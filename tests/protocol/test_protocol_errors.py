"""Malformed input: each case gets its RFC 6733 result code and the Failed-AVP §7.5 asks for; fuzzed
input (random and mutated bytes) never raises anything but DiameterError."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import build as B
from protocol import constants as C
from protocol import dictionary
from protocol.answer import encode_error_answer
from protocol.avp import check_unknown_mandatory
from protocol.base import decode_cea, decode_cer, decode_dpa, decode_dpr, decode_dwa, decode_dwr
from protocol.cca import decode_cca, encode_cca
from protocol.ccr import decode_ccr, encode_ccr
from protocol.errors import DiameterError
from protocol.framer import Framer
from protocol.header import decode_header, peek_header
from protocol.message import decode_message
from protocol.records import CCA, CCR, MSCCAnswer, MSCCRequest, Units

HDR = struct.Struct(">IIIII")


def frame(*avps: bytes, flags: int = 0xC0, cmd: int = 272, app: int = 4) -> bytes:
    body = b"".join(avps)
    return HDR.pack(0x01000000 | (20 + len(body)), (flags << 24) | cmd, app, 7, 8) + body


SID = B.utf8(263, "gw;1;2")
MANDATORY = [SID, B.utf8(264, "gw.example"), B.utf8(296, "example"), B.utf8(283, "ocs.example"),
             B.u32(258, 4), B.utf8(461, "32251@3gpp.org"), B.i32(416, 2), B.u32(415, 1)]  # fmt: skip


def err(data: bytes, decoder: Callable[[bytes], object] = decode_ccr) -> DiameterError:
    with pytest.raises(DiameterError) as e:
        decoder(data)
    return e.value


def test_minimal_ccr_decodes() -> None:
    r = decode_ccr(frame(*MANDATORY))
    assert (r.session_id, r.request_type, r.request_number, r.hop_by_hop) == ("gw;1;2", 2, 1, 7)


@pytest.mark.parametrize(("i", "name", "payload"), [
    (0, "Session-Id", b""), (6, "CC-Request-Type", bytes(4)), (7, "CC-Request-Number", bytes(4)),
])  # fmt: skip
def test_missing_avp_5005_with_zero_filled_minimal_avp(i: int, name: str, payload: bytes) -> None:
    avps = MANDATORY[:i] + MANDATORY[i + 1 :]
    e = err(frame(*avps))
    assert e.result_code == 5005 and name in str(e)
    code = struct.unpack(">I", MANDATORY[i][:4])[0]
    assert e.failed_avp == struct.pack(">II", code, 0x40000000 | (8 + len(payload))) + payload


def test_header_errors() -> None:
    good = frame(*MANDATORY)
    assert err(b"\x02" + good[1:]).result_code == 5011
    assert err(good[:-4]).result_code == 5015  # length field says more than we have
    bad = bytearray(good)
    bad[4] |= 0x01
    assert err(bytes(bad)).result_code == 3008
    assert err(frame(*MANDATORY, flags=0xE0)).result_code == 3008  # E bit on a request
    assert err(bytes(bad), decode_header).result_code == 3008
    assert err(frame(*MANDATORY, cmd=257)).result_code == 3001
    assert err(frame(*MANDATORY, app=5)).result_code == 3007


def test_reserved_avp_bits_3009_carries_the_avp() -> None:
    bad = bytearray(B.u32(278, 5))
    bad[4] |= 0x04
    e = err(frame(*MANDATORY, bytes(bad)))
    assert e.result_code == 3009 and e.failed_avp == bytes(bad)


def test_unknown_mandatory_avp_5001_top_level_and_nested() -> None:
    unknown = B.octets(99999, b"\x01\x02\x03")
    e = err(frame(*MANDATORY, unknown))
    assert e.result_code == 5001 and e.failed_avp == unknown
    assert decode_ccr(frame(*MANDATORY, B.octets(99999, b"x", flags=0)))  # no M bit: ignored
    mscc = B.group(456, B.u32(432, 1) + unknown)
    e = err(frame(*MANDATORY, mscc))
    assert e.result_code == 5001 and e.failed_avp == B.group(456, unknown)  # §7.5 hierarchy


def test_strict_validates_skipped_groups() -> None:
    si = B.group_3gpp(873, B.group_3gpp(874, B.octets_3gpp(99999, b"z")))
    data = frame(*MANDATORY, si)
    assert decode_ccr(data).session_id == "gw;1;2"  # skipped by length on the fast path
    e = err(data, lambda f: decode_ccr(f, strict=True))
    assert e.result_code == 5001
    assert e.failed_avp == B.group_3gpp(873, B.group_3gpp(874, B.octets_3gpp(99999, b"z")))
    with pytest.raises(DiameterError):
        check_unknown_mandatory(decode_message(data).avps)


def test_invalid_values_5004() -> None:
    e = err(frame(*MANDATORY[:6], B.i32(416, 9), MANDATORY[7]))
    assert e.result_code == 5004 and e.failed_avp == B.i32(416, 9)
    bad_utf8 = B.octets(264, b"\xff\xfe")
    e = err(frame(MANDATORY[0], bad_utf8, *MANDATORY[2:]))
    assert e.result_code == 5004 and e.failed_avp == bad_utf8


# --- value rules (protocol.dictionary LENGTHS / NO_NUL / ENUMS): 5004 with the AVP as received ---

TEXT_SLOTS = {263: 0, 264: 1, 296: 2, 283: 3, 461: 5}  # code -> index in MANDATORY
BOUNDS = [("Session-Id", 263, 400), ("Origin-Host", 264, 255), ("Origin-Realm", 296, 255),
          ("Destination-Realm", 283, 255), ("Destination-Host", 293, 255),
          ("Service-Context-Id", 461, 255), ("User-Name", 1, 253)]  # fmt: skip


def with_avp(code: int, avp: bytes) -> bytes:
    """A valid CCR with `avp` in place of (or added as) the AVP `code`."""
    avps = list(MANDATORY)
    if code in TEXT_SLOTS:
        avps[TEXT_SLOTS[code]] = avp
    else:
        avps.append(avp)
    return frame(*avps)


@pytest.mark.parametrize(("name", "code", "most"), BOUNDS)
def test_text_avp_bounds_5004(name: str, code: int, most: int) -> None:
    assert dictionary.by_name(name).max_len == most  # the rule lives in the dictionary
    assert decode_ccr(with_avp(code, B.utf8(code, "a" * most)))
    for payload in (b"", b"a" * (most + 1), b"a" * 5000):
        avp = B.octets(code, payload)
        e = err(with_avp(code, avp))
        assert (e.result_code, e.failed_avp) == (5004, avp), (name, len(payload))
        assert name in str(e)


@pytest.mark.parametrize("code", [263, 264, 296, 283, 293])
def test_nul_in_session_id_or_identity_5004(code: int) -> None:
    avp = B.utf8(code, "gw\0x")
    e = err(with_avp(code, avp))
    assert (e.result_code, e.failed_avp) == (5004, avp) and "NUL" in str(e)
    assert decode_ccr(with_avp(1, B.utf8(1, "user\0x")))  # a User-Name may (it is not a key part)


@pytest.mark.parametrize(("code", "bad"), [
    (416, 0), (416, 5), (416, -1), (436, 4), (436, -1), (295, 0), (295, 9), (455, 2), (455, -1),
])  # fmt: skip
def test_enumerated_outside_its_values_5004(code: int, bad: int) -> None:
    avp = B.i32(code, bad, flags=0)  # M clear: Failed-AVP must be the AVP as received, flags too
    avps = [a for a in MANDATORY if a[:4] != avp[:4]] + [avp]
    e = err(frame(*avps))
    assert (e.result_code, e.failed_avp) == (5004, avp)
    assert dictionary.BY_KEY[code].name in str(e)


def test_enumerated_values_come_from_the_dictionary() -> None:
    for name, enum in [("CC-Request-Type", C.CCRequestType), ("Requested-Action", C.RequestedAction),
                       ("Subscription-Id-Type", C.SubscriptionIdType),
                       ("Termination-Cause", C.TerminationCause),
                       ("Multiple-Services-Indicator", C.MultipleServicesIndicator),
                       ("Reporting-Reason", C.ReportingReason),
                       ("Tariff-Change-Usage", C.TariffChangeUsage)]:  # fmt: skip
        assert dictionary.by_name(name).values == {int(m) for m in enum}
        for v in enum:  # every listed value decodes (the rule refuses only what is outside)
            code = dictionary.by_name(name).code
            if name == "Subscription-Id-Type":
                avp = B.group(443, B.i32(450, v) + B.utf8(444, "123"))
            elif name in ("Reporting-Reason", "Tariff-Change-Usage"):
                inner = B.u32_3gpp(872, v) if name == "Reporting-Reason" else B.i32(452, v)
                avp = B.group(456, B.group(446, inner))
            else:
                avp = B.i32(code, v)
            avps = [a for a in MANDATORY if a[:4] != avp[:4]] + [avp]
            assert decode_ccr(frame(*avps))


@pytest.mark.parametrize("typ", [5, -1, 0x7FFFFFFF])
def test_subscription_id_type_outside_its_values_5004_wrapped(typ: int) -> None:
    bad = B.i32(450, typ)
    e = err(frame(*MANDATORY, B.group(443, bad + B.utf8(444, "491700000001"))))
    assert (e.result_code, e.failed_avp) == (5004, B.group(443, bad))
    raw = struct.pack(">III", 450, 0x4000000C, 0xFFFFFFFF)  # 4294967295, as the fuzzer sent it
    e = err(frame(*MANDATORY, B.group(443, raw + B.utf8(444, "491700000001"))))
    assert (e.result_code, e.failed_avp) == (5004, B.group(443, raw))


@pytest.mark.parametrize(("typ", "most"), [(0, 16), (1, 15), (2, 253), (3, 253), (4, 253)])
def test_subscription_id_data_bounds_by_type_5004_wrapped(typ: int, most: int) -> None:
    ok = B.group(443, B.i32(450, typ) + B.utf8(444, "1" * most))
    assert decode_ccr(frame(*MANDATORY, ok)).subscription_ids == [(typ, "1" * most)]
    for payload in (b"", b"1" * (most + 1), b"1" * 3000):
        data = B.octets(444, payload)
        e = err(frame(*MANDATORY, B.group(443, B.i32(450, typ) + data)))
        assert (e.result_code, e.failed_avp) == (5004, B.group(443, data)), len(payload)
    ext_code = 660 + typ  # the Extension member of the same type has the same bound
    ext = B.octets(ext_code, b"1" * (most + 1))
    e = err(frame(*MANDATORY, B.group(659, ext)))
    assert (e.result_code, e.failed_avp) == (5004, B.group(659, ext))
    assert decode_ccr(frame(*MANDATORY, B.group(659, B.utf8(ext_code, "1" * most))))


def test_reporting_reason_and_tariff_change_usage_outside_their_values_5004_wrapped() -> None:
    rr = B.u32_3gpp(872, 10)
    e = err(frame(*MANDATORY, B.group(456, B.u32(432, 1) + rr)))  # MSCC level
    assert (e.result_code, e.failed_avp) == (5004, B.group(456, rr))
    e = err(frame(*MANDATORY, B.group(456, B.group(446, B.u32(420, 5) + rr))))  # in a USU
    assert (e.result_code, e.failed_avp) == (5004, B.group(456, B.group(446, rr)))
    tcu = B.i32(452, 3)
    e = err(frame(*MANDATORY, B.group(446, tcu)))  # top-level USU
    assert (e.result_code, e.failed_avp) == (5004, B.group(446, tcu))


def cer(origin_host: bytes, origin_realm: bytes = b"example") -> bytes:
    return frame(B.octets(264, origin_host), B.octets(296, origin_realm), B.address(257, "127.0.0.1"),
                 B.u32(266, 0), B.utf8(269, "gw", 0), B.u32(258, 4), cmd=257, app=0)  # fmt: skip


@pytest.mark.parametrize(("host", "realm", "bad"), [
    (b"h" * 256, b"example", 264), (b"", b"example", 264), (b"gw", b"r" * 256, 296),
    (b"gw", b"", 296), (b"g\0w", b"example", 264),
])  # fmt: skip
def test_base_messages_hold_identities_to_their_bounds(host: bytes, realm: bytes, bad: int) -> None:
    assert decode_cer(cer(b"h" * 255, b"r" * 255)).origin_host == "h" * 255
    failed = B.octets(bad, host if bad == 264 else realm)
    e = err(cer(host, realm), decode_cer)
    assert (e.result_code, e.failed_avp) == (5004, failed)
    dwr = frame(B.octets(264, host), B.octets(296, realm), cmd=280, app=0)
    assert (err(dwr, decode_dwr).result_code, err(dwr, decode_dwr).failed_avp) == (5004, failed)
    dpr = frame(B.octets(264, host), B.octets(296, realm), B.i32(273, 0), cmd=282, app=0)
    assert err(dpr, decode_dpr).failed_avp == failed


def test_disconnect_cause_outside_its_values_5004() -> None:
    bad = B.i32(273, 3)
    e = err(frame(B.utf8(264, "gw"), B.utf8(296, "example"), bad, cmd=282, app=0), decode_dpr)
    assert (e.result_code, e.failed_avp) == (5004, bad)


def test_duplicates_5009() -> None:
    e = err(frame(*MANDATORY, B.u32(415, 2)))
    assert e.result_code == 5009 and e.failed_avp == B.u32(415, 2)
    mscc = B.group(456, B.u32(432, 1) + B.u32(432, 2))
    e = err(frame(*MANDATORY, mscc))
    assert e.result_code == 5009 and e.failed_avp == B.group(456, B.u32(432, 2))


def test_bad_lengths_5014() -> None:
    five = struct.pack(">II", 415, 0x4000000D) + b"\x00\x00\x00\x01\x02" + b"\x00\x00\x00"
    e = err(frame(*MANDATORY[:7], five))
    assert e.result_code == 5014 and e.failed_avp == five[:13] + b"\x00\x00\x00"
    # length running past the message: header as received + zero-filled minimal payload
    over = struct.pack(">III", 415, 0x40000100, 1)
    e = err(frame(*MANDATORY[:7], over))
    assert e.result_code == 5014 and e.failed_avp == struct.pack(">III", 415, 0x4000000C, 0)
    under = struct.pack(">II", 263, 0x40000004)
    e = err(frame(under, *MANDATORY[1:]))
    assert e.result_code == 5014 and e.failed_avp == struct.pack(">II", 263, 0x40000008)


def test_subscription_id_missing_member_is_wrapped() -> None:
    e = err(frame(*MANDATORY, B.group(443, B.i32(450, 0))))
    assert e.result_code == 5005
    assert e.failed_avp == B.group(443, struct.pack(">II", 444, 0x40000008))


def test_subscription_id_extension_maps_to_types() -> None:
    ext = B.group(659, B.utf8(661, "001010123456789")) + B.group(659, B.utf8(662, "sip:a@b"))
    r = decode_ccr(frame(*MANDATORY, ext, B.group(443, B.i32(450, 0) + B.utf8(444, "4917"))))
    assert r.subscription_ids == [(1, "001010123456789"), (2, "sip:a@b"), (0, "4917")]


def test_error_answer_copies_session_and_sets_e_bit() -> None:
    req = bytearray(frame(*MANDATORY, B.group(284, B.utf8(280, "proxy") + B.octets(33, b"st"))))
    req[4] |= 0x02  # reserved header bit
    h = peek_header(bytes(req))
    ans = encode_error_answer(bytes(req), h, 3008, "ocs", "realm", None, "bad header bits")
    msg = decode_message(ans)
    assert msg.header.is_error and not msg.header.is_request and msg.header.is_proxiable
    assert (msg.header.hop_by_hop, msg.header.end_to_end, msg.header.command_code) == (7, 8, 272)
    assert msg.find("Session-Id").value == "gw;1;2"
    assert msg.find("Result-Code").value == 3008
    assert msg.find("Proxy-Info").find("Proxy-Host").value == "proxy"
    assert msg.find("CC-Request-Number").value == 1
    fail = encode_error_answer(bytes(req), h, 5005, "ocs", "realm", B.u32(415, 0))
    msg = decode_message(fail)
    assert not msg.header.is_error
    assert msg.find("Failed-AVP").find("CC-Request-Number").value == 0
    assert decode_cca(fail).result_code == 5005  # a client reads it as a CCA


def test_error_answer_survives_garbage_after_session_id() -> None:
    req = frame(SID, b"\x00\x00\x01\x08\x40\xff\xff\xff")
    ans = decode_message(encode_error_answer(req, peek_header(req), 5014, "o", "r"))
    assert ans.find("Session-Id").value == "gw;1;2"


def test_nesting_depth_is_bounded() -> None:
    inner = B.u32(432, 1)
    for _ in range(40):
        inner = B.group(456, inner)
    data = frame(*MANDATORY, B.group(873, inner, flags=0))  # unknown, no M: skipped
    assert decode_ccr(data)
    nested = inner
    for _ in range(40):
        nested = B.group(284, nested)
    e = err(frame(*MANDATORY, nested), decode_message)
    assert e.result_code == 5004


# --- fuzzing ---

def seeds() -> list[bytes]:
    ccr = CCR("gw;1;2", "gw", "realm", "ocs", "ocs1", 4, "32251@3gpp.org", 2, 1, 0, 1700000000,
              [(0, "4917")], "u", 3, 1, 1, 9, Units(time=1), [Units(total_octets=5)],
              [MSCCRequest(1, [2], Units(), [Units(input_octets=1, money_value_digits=5,
                                                   money_exponent=-1, money_currency_code=978,
                                                   reporting_reason=2)], 3)])  # fmt: skip
    si = B.group_3gpp(873, B.group_3gpp(874, B.octets_3gpp(2, b"1234") + B.utf8(30, "apn")))
    cca = CCA("gw;1;2", 2001, "ocs", "realm", 2, 1, mscc=[MSCCAnswer(2001, 1, 2, Units(time=5), 60,
              final_unit_action=1, redirect_address_type=2, redirect_server_address="http://x",
              restriction_filter_rules=["permit"])])  # fmt: skip
    return [encode_ccr(ccr, 1, 2, extra_avps=si), encode_cca(cca, 1, 2), frame(*MANDATORY)]


DECODERS = [decode_ccr, lambda f: decode_ccr(f, strict=True), decode_cca, decode_message,
            decode_header, decode_cer, decode_cea, decode_dwr, decode_dwa, decode_dpr, decode_dpa,
            lambda f: encode_error_answer(f, peek_header(f), 5004, "o", "r")]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b = b[: rng.randrange(len(b) + 1)]
        elif op == 2 and len(b) > 28:  # an AVP length field somewhere
            p = rng.randrange(20, len(b) - 8) & ~3
            b[p + 5 : p + 8] = rng.randrange(1 << 24).to_bytes(3, "big")
        elif op == 3 and len(b) > 28:  # AVP flags
            b[(rng.randrange(20, len(b) - 8) & ~3) + 4] = rng.randrange(256)
        elif op == 4:
            b[rng.randrange(len(b) + 1) : 0] = rng.randbytes(rng.randrange(1, 9))
        elif op == 5 and len(b) >= 4:  # keep the message length consistent sometimes
            b[1:4] = len(b).to_bytes(3, "big")
    return bytes(b)


TYPED = {3001, 3007, 3008, 3009, 5001, 5004, 5005, 5009, 5011, 5014, 5015}


def run_all(data: bytes) -> None:
    for dec in DECODERS:
        if len(data) < 20 and dec is DECODERS[-1]:
            continue  # peek_header needs what the Framer guarantees
        try:
            dec(data)
        except DiameterError as e:
            assert e.result_code in TYPED, e
            assert e.failed_avp is None or isinstance(e.failed_avp, bytes)
    f = Framer(max_message_size=4096)
    try:
        for i in range(0, len(data), 7):
            f.feed(data[i : i + 7])
    except DiameterError as e:
        assert e.fatal


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2), st.randoms(use_true_random=False))
def test_fuzz_mutated_frames_only_raise_diameter_errors(i: int, rng: random.Random) -> None:
    run_all(mutate(rng, seeds()[i]))


@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_raise_diameter_errors(data: bytes) -> None:
    run_all(data)


@pytest.mark.slow
def test_fuzz_100k_inputs(capsys) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20240601)
    base = seeds()
    deadline = time.monotonic() + 90
    n = 0
    while n < 100_000 and time.monotonic() < deadline:
        data = mutate(rng, base[n % 3]) if n % 10 else rng.randbytes(rng.randrange(120))
        for dec in (decode_ccr, decode_cca, decode_message):
            try:
                dec(data)
            except DiameterError as e:
                assert e.result_code in TYPED, e
        n += 1
    with capsys.disabled():  # shown in the CI log, not captured
        print(f"\nfuzzed {n} inputs x 3 decoders (decode_ccr, decode_cca, decode_message)")
    assert n >= 100_000, f"only {n} inputs in the time budget"
