"""The other direction: bytes written by hand from the spec text decode to the record we expect, and
our encoder reproduces them; the dictionary agrees with Wireshark's where both define an AVP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import dictionary
from protocol.ccr import decode_ccr, encode_ccr
from protocol.message import decode_message
from protocol.records import CCR, MSCCRequest, Units

DATA = Path(__file__).parent / "data"


def load_hex(name: str) -> bytes:
    lines = (line.split("#", 1)[0] for line in (DATA / name).read_text().splitlines())
    return bytes.fromhex("".join("".join(lines).split()))


EXPECTED = CCR(
    session_id="gw;1;1", origin_host="gw", origin_realm="ex", destination_realm="ocs",
    destination_host=None, auth_application_id=4, service_context_id="32251@3gpp.org",
    request_type=1, request_number=0, event_timestamp=1704067200,
    subscription_ids=[(0, "4917")], multiple_services_indicator=1,
    mscc=[MSCCRequest(rating_group=100, requested=Units(total_octets=1_000_000))],
    hop_by_hop=0xABCD, end_to_end=0x12345678,
)  # fmt: skip


def test_hand_written_ccr_initial_decodes_to_expected_record() -> None:
    frame = load_hex("ccr_initial_rfc8506.hex")
    assert len(frame) == 288
    assert decode_ccr(frame) == EXPECTED
    assert decode_ccr(frame, strict=True) == EXPECTED
    ps = decode_message(frame).find("Service-Information").find("PS-Information")
    assert ps.find("3GPP-Charging-Id").value == b"\x00\x00\x00\x2a"
    assert ps.find("3GPP-RAT-Type").value == b"\x06"


def test_our_encoder_reproduces_the_hand_written_bytes() -> None:
    frame = load_hex("ccr_initial_rfc8506.hex")
    si = frame[-56:]  # Service-Information, which the CCR record does not model
    assert encode_ccr(EXPECTED, 0xABCD, 0x12345678, extra_avps=si) == frame


WS = Path("/usr/share/wireshark/diameter")
SAME_AVP = {"Acct-Multi-Session-Id": "Accounting-Multi-Session-Id"}  # spelling differs only


@pytest.mark.skipif(not (WS / "dictionary.xml").exists(), reason="Wireshark dictionary not installed")
def test_dictionary_codes_agree_with_wireshark() -> None:
    ws: dict[tuple[int, int], str] = {}
    for f in ("dictionary.xml", "chargecontrol.xml", "TGPP.xml"):
        text = re.sub(r"<!--.*?-->", "", (WS / f).read_text(errors="replace"), flags=re.S)
        for m in re.finditer(r"<avp\s+([^>]*)>", text):
            a = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
            vendor = 10415 if a.get("vendor-id") == "TGPP" else 0 if "vendor-id" not in a else -1
            ws.setdefault((int(a["code"]), vendor), a["name"])
    checked, wrong = 0, []
    for d in dictionary.AVPS:
        name, code, vendor = d[0], d[1], d[2]
        if (code, vendor) in ws:
            theirs = ws[(code, vendor)].removeprefix("3GPP-")
            if theirs.lower() != SAME_AVP.get(name, name).removeprefix("3GPP-").lower():
                wrong.append((name, code, vendor, ws[(code, vendor)]))
            checked += 1
    assert wrong == []
    assert checked > 180
