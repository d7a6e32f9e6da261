"""Round trips: every data format, arbitrary AVP trees (byte-exact), CCR/CCA records, base messages,
header and framer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import dictionary
from protocol.avp import Avp, decode_avps, encode_avp, encode_avps, make
from protocol.base import (
    decode_cea,
    decode_cer,
    decode_dpa,
    decode_dpr,
    decode_dwa,
    decode_dwr,
    encode_cea,
    encode_cer,
    encode_dpa,
    encode_dpr,
    encode_dwa,
    encode_dwr,
)  # fmt: skip
from protocol.cca import decode_cca, encode_cca
from protocol.ccr import decode_ccr, encode_ccr
from protocol.errors import DiameterError
from protocol.formats import decode_value, encode_value
from protocol.framer import Framer
from protocol.header import Header, decode_header, encode_header
from protocol.message import Message, decode_message, encode_message
from protocol.records import (
    CCA,
    CCR,
    CEA,
    CER,
    DPA,
    DPR,
    DWA,
    DWR,
    CostInformation,
    FinalUnit,
    MSCCAnswer,
    MSCCRequest,
    Units,
)  # fmt: skip

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
enum = st.integers(0, 2**31 - 1)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
def valid(name: str) -> st.SearchStrategy:
    """Values a decoder accepts for the AVP (its dictionary rules: bounds, NUL, enumeration)."""
    d = dictionary.by_name(name)
    if d.values is not None:
        return st.sampled_from(sorted(d.values))
    chars = st.characters(blacklist_categories=("Cs",))
    return st.text(chars, min_size=d.min_len, max_size=min(24, d.max_len // 4 or 24)).filter(
        lambda t: dictionary.problem(d, t.encode(), None) is None)


ident = valid("Origin-Host")
_SUB_TYPES = ("E164", "IMSI", "SIP-URI", "NAI", "Private")
subscription = st.integers(0, 4).flatmap(
    lambda t: st.tuples(st.just(t), valid(f"Subscription-Id-{_SUB_TYPES[t]}")))
unix_time = st.integers(-61505152, 4233462143)  # what a 32-bit NTP Time can carry (2 eras)
ip = st.ip_addresses().map(str)

VALUES = {
    "OctetString": st.binary(max_size=24),
    "Integer32": i32,
    "Integer64": i64,
    "Unsigned32": u32,
    "Unsigned64": u64,
    "Float32": st.floats(width=32, allow_nan=False),
    "Float64": st.floats(allow_nan=False),
    "Address": ip | st.tuples(st.integers(3, 65535), st.binary(max_size=8)),
    "Time": unix_time,
    "UTF8String": text,
    "DiameterIdentity": text,
    "DiameterURI": text,
    "Enumerated": i32,
    "IPFilterRule": text,
}
assert set(VALUES) | {"Grouped"} == dictionary.TYPES


@given(st.sampled_from(sorted(VALUES)), st.data())
def test_every_data_format_round_trips(avp_type: str, data: st.DataObject) -> None:
    value = data.draw(VALUES[avp_type])
    assert decode_value(avp_type, encode_value(avp_type, value)) == value


LEAVES = [d for d in dictionary.BY_KEY.values() if d.type != "Grouped"]
GROUPS = [d for d in dictionary.BY_KEY.values() if d.type == "Grouped"]


@st.composite
def known_leaf(draw: st.DrawFn) -> Avp:
    d = draw(st.sampled_from(LEAVES))
    return make(d.name, draw(VALUES[d.type]))


@st.composite
def unknown_avp(draw: st.DrawFn) -> Avp:
    vendor = draw(st.sampled_from([0, 0, 10415, 9, 2**32 - 1]))
    code = draw(st.integers(0, 2**32 - 1).filter(lambda c: dictionary.lookup(c, vendor) is None))
    flags = draw(st.sampled_from([0x00, 0x40, 0x20, 0x60])) | (0x80 if vendor else 0)
    return Avp(code, flags, vendor, draw(st.binary(max_size=20)))


def grouped(children: st.SearchStrategy[list[Avp]]) -> st.SearchStrategy[Avp]:
    return st.builds(lambda d, ch: make(d.name, ch), st.sampled_from(GROUPS), children)


avp_tree = st.recursive(
    known_leaf() | unknown_avp(), lambda kids: grouped(st.lists(kids, max_size=4)), max_leaves=20
)


@settings(max_examples=300)
@given(st.lists(avp_tree, max_size=8))
def test_avp_trees_round_trip_byte_exact(avps: list[Avp]) -> None:
    wire = encode_avps(avps)
    assert len(wire) % 4 == 0
    back = decode_avps(wire)
    assert back == avps
    assert encode_avps(back) == wire
    for a in back:
        if a.children is None and a.definition is not None:
            assert make(a.name, a.value, a.flags) == a  # typed value survives too


@given(st.lists(avp_tree, max_size=6), u32, u32, u32, st.integers(0, 255))
def test_messages_round_trip(avps: list[Avp], cmd: int, hbh: int, e2e: int, flags: int) -> None:
    flags &= 0xF0
    if flags & 0x80:
        flags &= ~0x20
    h = Header(1, 0, flags, cmd & 0xFFFFFF, 4, hbh, e2e)
    frame = encode_message(Message(h, avps))
    msg = decode_message(frame)
    assert msg.avps == avps
    assert msg.header.length == len(frame) and msg.header.flags == flags
    assert encode_message(msg) == frame


def test_unknown_avp_kept_raw_and_reencoded_unchanged() -> None:
    raw = struct.pack(">IIII", 99999, 0xA0000010, 12345, 0xDEADBEEF)  # V+P, vendor 12345
    (a,) = decode_avps(raw)
    assert (a.code, a.vendor, a.data, a.children, a.name) == (99999, 12345, b"\xde\xad\xbe\xef", None, None)
    assert encode_avp(a) == raw


def test_time_uses_ntp_epoch_and_era_rule() -> None:
    assert encode_value("Time", 0) == struct.pack(">I", 2208988800)
    assert decode_value("Time", struct.pack(">I", 0)) == 2085978496  # 2036-02-07 06:28:16 UTC


def test_address_has_family_prefix() -> None:
    assert encode_value("Address", "192.0.2.1") == bytes.fromhex("0001c0000201")
    assert encode_value("Address", "2001:db8::1")[:2] == b"\x00\x02"


# --- typed records ---

def _opt(s: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | s


@st.composite
def units(draw: st.DrawFn, used: bool = False) -> Units:
    money = draw(st.none() | st.tuples(i64, i32, _opt(u32)))
    return Units(
        draw(_opt(u32)), draw(_opt(u64)), draw(_opt(u64)), draw(_opt(u64)), draw(_opt(u64)),
        *(money if money else (None, None, None)),
        draw(_opt(valid("Reporting-Reason"))) if used else None,
        draw(_opt(valid("Tariff-Change-Usage"))) if used else None,
    )  # fmt: skip


mscc_request = st.builds(MSCCRequest, _opt(u32), st.lists(u32, max_size=3), _opt(units()),
                         st.lists(units(used=True), max_size=3),
                         _opt(valid("Reporting-Reason")))  # fmt: skip


@st.composite
def ccrs(draw: st.DrawFn) -> CCR:
    return CCR(
        draw(valid("Session-Id")), draw(ident), draw(ident), draw(ident), draw(_opt(ident)),
        draw(u32), draw(valid("Service-Context-Id")), draw(valid("CC-Request-Type")), draw(u32),
        draw(_opt(valid("Requested-Action"))), draw(_opt(unix_time)),
        draw(st.lists(subscription, max_size=3)), draw(_opt(valid("User-Name"))), draw(_opt(u32)),
        draw(_opt(valid("Termination-Cause"))), draw(_opt(valid("Multiple-Services-Indicator"))),
        draw(_opt(u32)), draw(_opt(units())),
        draw(st.lists(units(used=True), max_size=2)), draw(st.lists(mscc_request, max_size=4)),
        draw(u32), draw(u32), draw(st.booleans()),
    )  # fmt: skip


@settings(max_examples=300)
@given(ccrs())
def test_ccr_round_trips(ccr: CCR) -> None:
    frame = encode_ccr(ccr, ccr.hop_by_hop, ccr.end_to_end, ccr.retransmit)
    assert decode_ccr(frame) == ccr
    assert decode_ccr(frame, strict=True) == ccr


@st.composite
def mscc_answers(draw: st.DrawFn) -> MSCCAnswer:
    fua = draw(_opt(enum))
    redirect = draw(_opt(text)) if fua is not None else None
    return MSCCAnswer(
        draw(_opt(u32)), draw(_opt(u32)), draw(_opt(u32)), draw(_opt(units())), draw(_opt(u32)),
        draw(_opt(u32)), draw(_opt(u32)), draw(_opt(u32)), fua,
        draw(enum) if redirect is not None else None, redirect,
        draw(st.lists(text, max_size=2)) if fua is not None else [],
        draw(st.lists(text, max_size=2)) if fua is not None else [],
    )  # fmt: skip


@st.composite
def final_units(draw: st.DrawFn) -> FinalUnit:
    redirect = draw(_opt(text))
    return FinalUnit(draw(enum), draw(enum) if redirect is not None else None, redirect,
                     draw(st.lists(text, max_size=2)), draw(st.lists(text, max_size=2)))


@st.composite
def ccas(draw: st.DrawFn) -> CCA:
    cost = draw(st.none() | st.builds(CostInformation, i64, i32, u32, _opt(text)))
    return CCA(
        draw(text), draw(u32), draw(text), draw(text), draw(st.integers(1, 4)), draw(u32),
        draw(u32), draw(st.lists(mscc_answers(), max_size=3)), draw(_opt(units())), cost,
        draw(_opt(enum)), draw(_opt(enum)), draw(_opt(u32)), draw(_opt(text)),
        draw(st.none() | st.lists(known_leaf(), min_size=1, max_size=2).map(encode_avps)),
        draw(_opt(unix_time)), draw(st.none() | final_units()), draw(_opt(u32)),
    )  # fmt: skip


@settings(max_examples=300)
@given(ccas(), u32, u32)
def test_cca_round_trips(cca: CCA, hbh: int, e2e: int) -> None:
    frame = encode_cca(cca, hbh, e2e)
    assert decode_cca(frame) == cca
    h = decode_header(frame)
    assert (h.hop_by_hop, h.end_to_end, h.is_request, h.is_proxiable) == (hbh, e2e, False, True)
    assert h.is_error == (3000 <= cca.result_code < 4000)
    msg = decode_message(frame)  # the generic path reads the same bytes
    assert msg.find("Session-Id").value == cca.session_id


vsai = st.tuples(u32, _opt(u32), _opt(u32))
cap_args = (ident, ident, st.lists(ip, max_size=2), u32, text, _opt(u32), st.lists(u32, max_size=2),
            st.lists(u32, max_size=2), st.lists(u32, max_size=2), st.lists(vsai, max_size=2),
            st.lists(u32, max_size=2), _opt(u32))  # fmt: skip


@given(st.builds(CER, *cap_args), st.builds(CEA, st.integers(2000, 2999), *cap_args), u32, u32)
def test_capabilities_exchange_round_trips(cer: CER, cea: CEA, hbh: int, e2e: int) -> None:
    assert decode_cer(encode_cer(cer, hbh, e2e)) == cer
    assert decode_cea(encode_cea(cea, hbh, e2e)) == cea


@given(ident, ident, _opt(u32), u32, valid("Disconnect-Cause"))
def test_watchdog_and_disconnect_round_trip(host: str, realm: str, osi: int | None, rc: int,
                                            cause: int) -> None:  # fmt: skip
    assert decode_dwr(encode_dwr(DWR(host, realm, osi), 1, 2)) == DWR(host, realm, osi)
    dwa = DWA(rc, host, realm, osi, "why", b"")
    assert decode_dwa(encode_dwa(dwa, 1, 2)) == dwa
    assert decode_dpr(encode_dpr(DPR(host, realm, cause), 1, 2)) == DPR(host, realm, cause)
    dpa = DPA(rc, host, realm)
    assert decode_dpa(encode_dpa(dpa, 1, 2)) == dpa


def test_header_fields_and_flags() -> None:
    frame = encode_header(20, 0xD0, 272, 4, 0x01020304, 0x0A0B0C0D)
    h = decode_header(frame)
    assert (h.version, h.length, h.command_code, h.application_id) == (1, 20, 272, 4)
    assert (h.hop_by_hop, h.end_to_end) == (0x01020304, 0x0A0B0C0D)
    assert h.is_request and h.is_proxiable and h.is_retransmit and not h.is_error


# --- framer ---

def _frames() -> list[bytes]:
    ccr = CCR("s;1", "h", "r", "d", None, 4, "32251@3gpp.org", 1, 0)
    return [encode_ccr(ccr, i, i) for i in range(3)] + [encode_dwr(DWR("h", "r"), 9, 9)]


def test_framer_many_frames_in_one_read_and_split_everywhere() -> None:
    frames = _frames()
    stream = b"".join(frames)
    assert Framer().feed(stream) == frames
    for cut in range(1, len(stream)):
        f = Framer()
        assert f.feed(stream[:cut]) + f.feed(stream[cut:]) == frames
        assert f.buffered == 0


@given(st.lists(st.integers(1, 64), min_size=1, max_size=40))
def test_framer_arbitrary_chunking(sizes: list[int]) -> None:
    frames = _frames()
    stream = b"".join(frames)
    f, out, pos, i = Framer(), [], 0, 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        out += f.feed(stream[pos : pos + n])
        pos, i = pos + n, i + 1
    assert out == frames


def test_framer_huge_length_is_refused_without_allocating() -> None:
    f = Framer(max_message_size=65536)
    with pytest.raises(DiameterError) as e:
        f.feed(b"\x01\xff\xff\xfc")  # 16 MiB - 4
    assert e.value.fatal and e.value.result_code == 5015
    with pytest.raises(DiameterError):  # stays failed
        f.feed(_frames()[0])
    big = Framer(max_message_size=1 << 24)
    assert big.feed(b"\x01\xff\xff\xfc" + bytes(100)) == []
    assert big.buffered == 104  # only what arrived is held


@pytest.mark.parametrize(("prefix", "code"), [(b"\x02", 5011), (b"\x01\x00\x00\x10", 5015),
                                               (b"\x01\x00\x00\x16", 5015)])  # fmt: skip
def test_framer_unsynchronisable_headers_are_fatal(prefix: bytes, code: int) -> None:
    with pytest.raises(DiameterError) as e:
        Framer().feed(prefix)
    assert e.value.fatal and e.value.result_code == code
