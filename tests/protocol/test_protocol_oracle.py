"""Independent oracle: Wireshark's Diameter dissector must read our encodings as we meant them.

We write a pcap (Ethernet/IPv4/TCP to port 3868) of real CCR/CCA/CER/CEA/DWR/DWA/DPR/DPA frames, run
`tshark -T pdml`, and walk its AVP tree side by side with ours: same codes, same nesting, same
values, and no malformed or warning/error expert items.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pcap import write_pcap

from protocol import build as B
from protocol.answer import encode_error_answer
from protocol.avp import Avp
from protocol.base import encode_cea, encode_cer, encode_dpa, encode_dpr, encode_dwa, encode_dwr
from protocol.cca import encode_cca
from protocol.ccr import encode_ccr
from protocol.formats import ntp_to_unix
from protocol.header import decode_header
from protocol.message import decode_message
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
    MSCCAnswer,
    MSCCRequest,
    Units,
)  # fmt: skip

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

SID = "pgw1.operator.example;1700000000;42;gy"
WARN = 0x00600000  # Wireshark expert severity: warning and above fail the test


def service_information() -> bytes:
    ps = b"".join([
        B.octets_3gpp(2, b"\x12\x34\x56\x78"),  # 3GPP-Charging-Id
        B.address_3gpp(1228, "192.0.2.10"),  # SGSN-Address
        B.address_3gpp(847, "2001:db8::1"),  # GGSN-Address
        B.octets_3gpp(21, b"\x06"),  # 3GPP-RAT-Type (EUTRAN)
        B.utf8(30, "internet.apn"),  # Called-Station-Id
        B.utf8_3gpp(8, "00101"),  # 3GPP-IMSI-MCC-MNC
        B.octets_3gpp(22, bytes.fromhex("8200f110000100f1100000000a")),  # 3GPP-User-Location-Info
    ])  # fmt: skip
    return B.group_3gpp(873, B.group_3gpp(874, ps))


def sample_messages() -> list[tuple[bool, bytes]]:
    base = dict(session_id=SID, origin_host="pgw1.operator.example", origin_realm="operator.example",
                destination_realm="ocs.operator.example", service_context_id="32251@3gpp.org")  # fmt: skip
    sub = [(0, "491700000001"), (1, "001010000000001")]
    # An empty RSU is valid (RFC 8506 §8.18) but Wireshark flags it "Data is empty" (warning),
    # so the oracle uses a non-empty one; empty RSUs are covered by the round-trip tests.
    ccr_i = CCR(**base, request_type=1, request_number=0, subscription_ids=sub,
                origin_state_id=7, event_timestamp=1700000000, multiple_services_indicator=1,
                mscc=[MSCCRequest(32, [1], Units(total_octets=0), []),
                      MSCCRequest(33, [], Units(time=600), [])])
    ccr_u = CCR(**base, request_type=2, request_number=1, subscription_ids=sub[:1],
                mscc=[MSCCRequest(32, [], Units(total_octets=10_000_000),
                                  [Units(total_octets=7_340_032, input_octets=1_048_576,
                                         output_octets=6_291_456, time=90,
                                         reporting_reason=3, tariff_change_usage=0)], 3)])
    ccr_t = CCR(**base, request_type=3, request_number=2, termination_cause=1,
                mscc=[MSCCRequest(32, [], None, [Units(total_octets=1234, reporting_reason=2)])])
    ccr_e = CCR(**base | {"service_context_id": "32274@3gpp.org"}, request_type=4,
                request_number=0, requested_action=0, user_name="alice", destination_host="ocs1",
                subscription_ids=[(0, "491700000002")], service_identifier=5,
                requested=Units(service_specific_units=1, money_value_digits=1234,
                                money_exponent=-2, money_currency_code=978))
    cca_u = CCA(SID, 2001, "ocs1.operator.example", "operator.example", 2, 1,
                mscc=[MSCCAnswer(2001, 32, None, Units(total_octets=10_000_000), 3600, 60, 30,
                                 1_000_000),
                      MSCCAnswer(4012, 33, 7, Units(time=0), None, None, None, None, 2,
                                 restriction_filter_rules=["permit in ip from any to 10.0.0.1"],
                                 filter_ids=["walled-garden"]),
                      MSCCAnswer(2001, 34, None, Units(time=60), final_unit_action=1,
                                 redirect_address_type=2,
                                 redirect_server_address="http://topup.example/")],
                origin_state_id=9, credit_control_failure_handling=1)
    cca_e = CCA(SID, 2001, "ocs1.operator.example", "operator.example", 4, 0,
                granted=Units(service_specific_units=1),
                cost_information=CostInformation(1234, -2, 978, "EUR"), check_balance_result=0,
                event_timestamp=1700000123)
    cer = CER("pgw1.operator.example", "operator.example", ["10.0.0.1", "2001:db8::2"], 10415,
              "ocs-test", 7, [10415], [4], [], [(10415, 4, None)], [0], 1)
    cea = CEA(2001, "ocs1.operator.example", "operator.example", ["10.0.0.2"], 0, "ocs", 9,
              [10415], [4], [], [], [], 1)
    req_ccr_u = encode_ccr(ccr_u, 0x11, 0x22, extra_avps=service_information())
    bad = bytearray(req_ccr_u)
    bad[4] |= 0x08  # reserved header bit -> 3008 answer
    err = encode_error_answer(bytes(bad), decode_header(req_ccr_u), 3008, "ocs1.operator.example",
                              "operator.example", None, "reserved header bit set")
    err5005 = encode_error_answer(req_ccr_u, decode_header(req_ccr_u), 5005,
                                  "ocs1.operator.example", "operator.example",
                                  B.u32(415, 0), "missing CC-Request-Number")
    return [
        (True, encode_cer(cer, 1, 1)), (False, encode_cea(cea, 1, 1)),
        (True, encode_dwr(DWR("pgw1.operator.example", "operator.example", 7), 2, 2)),
        (False, encode_dwa(DWA(2001, "ocs1.operator.example", "operator.example", 9), 2, 2)),
        (True, encode_ccr(ccr_i, 0x10, 0x20)),
        (True, req_ccr_u), (False, encode_cca(cca_u, 0x11, 0x22)),
        (True, encode_ccr(ccr_t, 0x12, 0x23)),
        (True, encode_ccr(ccr_e, 0x13, 0x24)), (False, encode_cca(cca_e, 0x13, 0x24)),
        (False, err), (False, err5005),
        (True, encode_dpr(DPR("pgw1.operator.example", "operator.example", 0), 3, 3)),
        (False, encode_dpa(DPA(2001, "ocs1.operator.example", "operator.example"), 3, 3)),
    ]  # fmt: skip


_META = {"diameter.avp.code", "diameter.avp.flags", "diameter.avp.len", "diameter.avp.pad",
         "diameter.avp.vendorId", "diameter.avp"}  # fmt: skip


def _tshark_avps(el: ET.Element) -> list[ET.Element]:
    """Member AVPs: direct children, or (for a grouped AVP) children of its value field."""
    direct = [f for f in el if f.get("name") == "diameter.avp"]
    if direct:
        return direct
    for f in el:
        if f.get("name") not in _META:
            return [g for g in f if g.get("name") == "diameter.avp"]
    return []


def _compare(ours: list[Avp], theirs: list[ET.Element], where: str) -> int:
    """Walk both trees; return how many leaf values were compared."""
    assert len(ours) == len(theirs), f"{where}: {len(ours)} AVPs vs tshark {len(theirs)}"
    checked = 0
    for a, el in zip(ours, theirs, strict=True):
        fields = {f.get("name"): f for f in el}
        assert int(fields["diameter.avp.code"].get("show")) == a.code, where
        if a.vendor:
            assert int(fields["diameter.avp.vendorId"].get("show")) == a.vendor, where
        here = f"{where}/{a.name or a.code}"
        if a.children is not None:
            checked += _compare(a.children, _tshark_avps(el), here)
            continue
        vals = [f for name, f in fields.items() if name not in _META]
        assert vals, f"{here}: tshark shows no value"
        v = vals[0]
        d = a.definition
        typ = d.type if d is not None else "OctetString"
        if typ in ("UTF8String", "DiameterIdentity", "DiameterURI", "IPFilterRule"):
            assert v.get("show") == a.value, here
        elif typ == "Address":  # the AVP line shows the address: "... val=10.0.0.1"
            assert el.get("showname").rsplit("val=", 1)[1] == a.value, here
            assert v.get("value") == a.data.hex(), here
        elif typ in ("Unsigned32", "Unsigned64", "Integer32", "Integer64", "Enumerated"):
            assert int(v.get("show"), 0) == a.value, here
        elif typ == "Time":
            assert v.get("value") == a.data.hex(), here
            secs = int(a.data.hex(), 16)
            assert ntp_to_unix(secs) == a.value, here
        else:  # OctetString (and Wireshark's OctetStringOrUTF8 views)
            assert v.get("value") == a.data.hex(), here
        checked += 1
    return checked


def test_tshark_decodes_every_avp_as_meant(tmp_path: Path) -> None:
    messages = sample_messages()
    pcap = tmp_path / "gy.pcap"
    write_pcap(pcap, messages)
    out = subprocess.run(
        [TSHARK, "-r", str(pcap), "-o", "tcp.check_checksum:FALSE", "-d", "tcp.port==3868,diameter",
         "-T", "pdml"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    root = ET.fromstring(out.stdout)
    packets = root.findall("packet")
    assert len(packets) == len(messages)
    total = 0
    for i, (pkt, (_, frame)) in enumerate(zip(packets, messages, strict=True)):
        for f in pkt.iter("field"):
            assert f.get("name") != "_ws.malformed", f"packet {i}: malformed"
            if f.get("name") == "_ws.expert.severity":
                sev = int(f.get("value") or f.get("show"), 16 if f.get("value") else 0)
                assert sev < WARN, f"packet {i}: expert {sev:#x}"
        dia = [p for p in pkt.findall("proto") if p.get("name") == "diameter"]
        assert len(dia) == 1, f"packet {i}: {len(dia)} diameter PDUs"
        fields = {f.get("name"): f for f in dia[0]}
        msg = decode_message(frame)
        assert int(fields["diameter.cmd.code"].get("show")) == msg.header.command_code
        assert int(fields["diameter.flags"].get("show"), 16) == msg.header.flags
        assert int(fields["diameter.hopbyhopid"].get("show"), 16) == msg.header.hop_by_hop
        total += _compare(msg.avps, _tshark_avps(dia[0]), f"packet {i}")
    assert total > 150
