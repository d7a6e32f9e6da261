"""The AVP dictionary as data: (name, code, vendor, type, M-bit rule), plus grouped members.

Codes and types checked against RFC 6733 §4.5, RFC 8506 §8 / §13, 3GPP TS 32.299 §7.2 and
Wireshark's diameter dictionary (tests/test_protocol_dictionary.py cross-checks when it is installed).
M-bit rule: "must" (sent with M set), "may", "mustnot". Where a spec leaves it open we say "may".
Adding an AVP is one line here; the generic codec (protocol.avp) derives everything from it.
LENGTHS, NO_NUL and ENUMS are the value rules a decoder enforces (5004 with the AVP as received,
RFC 6733 §7.1.5 / §7.5): the flat CCR decoder and the base-message decoders both read them here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from protocol import constants as C
from protocol.constants import VENDOR_3GPP as V3GPP

TYPES = frozenset({
    "OctetString", "Integer32", "Integer64", "Unsigned32", "Unsigned64", "Float32", "Float64",
    "Grouped", "Address", "Time", "UTF8String", "DiameterIdentity", "DiameterURI", "Enumerated",
    "IPFilterRule",
})

# fmt: off
AVPS: tuple[tuple[str, int, int, str, str], ...] = (
    # --- RFC 6733 base protocol (and the RADIUS-derived attributes it and Gy reuse) ---
    ("User-Name", 1, 0, "UTF8String", "must"),
    ("Framed-IP-Address", 8, 0, "OctetString", "must"),
    ("Filter-Id", 11, 0, "UTF8String", "must"),
    ("Class", 25, 0, "OctetString", "must"),
    ("Session-Timeout", 27, 0, "Unsigned32", "must"),
    ("Called-Station-Id", 30, 0, "UTF8String", "must"),
    ("Calling-Station-Id", 31, 0, "UTF8String", "must"),
    ("Proxy-State", 33, 0, "OctetString", "must"),
    ("Acct-Session-Id", 44, 0, "OctetString", "must"),
    ("Acct-Multi-Session-Id", 50, 0, "UTF8String", "must"),
    ("Event-Timestamp", 55, 0, "Time", "must"),
    ("Acct-Interim-Interval", 85, 0, "Unsigned32", "must"),
    ("Host-IP-Address", 257, 0, "Address", "must"),
    ("Auth-Application-Id", 258, 0, "Unsigned32", "must"),
    ("Acct-Application-Id", 259, 0, "Unsigned32", "must"),
    ("Vendor-Specific-Application-Id", 260, 0, "Grouped", "must"),
    ("Redirect-Host-Usage", 261, 0, "Enumerated", "must"),
    ("Redirect-Max-Cache-Time", 262, 0, "Unsigned32", "must"),
    ("Session-Id", 263, 0, "UTF8String", "must"),
    ("Origin-Host", 264, 0, "DiameterIdentity", "must"),
    ("Supported-Vendor-Id", 265, 0, "Unsigned32", "must"),
    ("Vendor-Id", 266, 0, "Unsigned32", "must"),
    ("Firmware-Revision", 267, 0, "Unsigned32", "mustnot"),
    ("Result-Code", 268, 0, "Unsigned32", "must"),
    ("Product-Name", 269, 0, "UTF8String", "mustnot"),
    ("Session-Binding", 270, 0, "Unsigned32", "must"),
    ("Session-Server-Failover", 271, 0, "Enumerated", "must"),
    ("Multi-Round-Time-Out", 272, 0, "Unsigned32", "must"),
    ("Disconnect-Cause", 273, 0, "Enumerated", "must"),
    ("Auth-Request-Type", 274, 0, "Enumerated", "must"),
    ("Auth-Grace-Period", 276, 0, "Unsigned32", "must"),
    ("Auth-Session-State", 277, 0, "Enumerated", "must"),
    ("Origin-State-Id", 278, 0, "Unsigned32", "must"),
    ("Failed-AVP", 279, 0, "Grouped", "must"),
    ("Proxy-Host", 280, 0, "DiameterIdentity", "must"),
    ("Error-Message", 281, 0, "UTF8String", "mustnot"),
    ("Route-Record", 282, 0, "DiameterIdentity", "must"),
    ("Destination-Realm", 283, 0, "DiameterIdentity", "must"),
    ("Proxy-Info", 284, 0, "Grouped", "must"),
    ("Re-Auth-Request-Type", 285, 0, "Enumerated", "must"),
    ("Accounting-Sub-Session-Id", 287, 0, "Unsigned64", "must"),
    ("Authorization-Lifetime", 291, 0, "Unsigned32", "must"),
    ("Redirect-Host", 292, 0, "DiameterURI", "must"),
    ("Destination-Host", 293, 0, "DiameterIdentity", "must"),
    ("Error-Reporting-Host", 294, 0, "DiameterIdentity", "mustnot"),
    ("Termination-Cause", 295, 0, "Enumerated", "must"),
    ("Origin-Realm", 296, 0, "DiameterIdentity", "must"),
    ("Experimental-Result", 297, 0, "Grouped", "must"),
    ("Experimental-Result-Code", 298, 0, "Unsigned32", "must"),
    ("Inband-Security-Id", 299, 0, "Unsigned32", "must"),
    ("E2E-Sequence", 300, 0, "Grouped", "must"),
    ("Accounting-Record-Type", 480, 0, "Enumerated", "must"),
    ("Accounting-Realtime-Required", 483, 0, "Enumerated", "must"),
    ("Accounting-Record-Number", 485, 0, "Unsigned32", "must"),
    # --- RFC 8506 (RFC 4006) Credit-Control, all of §8 ---
    ("CC-Correlation-Id", 411, 0, "OctetString", "may"),
    ("CC-Input-Octets", 412, 0, "Unsigned64", "must"),
    ("CC-Money", 413, 0, "Grouped", "must"),
    ("CC-Output-Octets", 414, 0, "Unsigned64", "must"),
    ("CC-Request-Number", 415, 0, "Unsigned32", "must"),
    ("CC-Request-Type", 416, 0, "Enumerated", "must"),
    ("CC-Service-Specific-Units", 417, 0, "Unsigned64", "must"),
    ("CC-Session-Failover", 418, 0, "Enumerated", "must"),
    ("CC-Sub-Session-Id", 419, 0, "Unsigned64", "must"),
    ("CC-Time", 420, 0, "Unsigned32", "must"),
    ("CC-Total-Octets", 421, 0, "Unsigned64", "must"),
    ("Check-Balance-Result", 422, 0, "Enumerated", "must"),
    ("Cost-Information", 423, 0, "Grouped", "must"),
    ("Cost-Unit", 424, 0, "UTF8String", "must"),
    ("Currency-Code", 425, 0, "Unsigned32", "must"),
    ("Credit-Control", 426, 0, "Enumerated", "must"),
    ("Credit-Control-Failure-Handling", 427, 0, "Enumerated", "must"),
    ("Direct-Debiting-Failure-Handling", 428, 0, "Enumerated", "must"),
    ("Exponent", 429, 0, "Integer32", "must"),
    ("Final-Unit-Indication", 430, 0, "Grouped", "must"),
    ("Granted-Service-Unit", 431, 0, "Grouped", "must"),
    ("Rating-Group", 432, 0, "Unsigned32", "must"),
    ("Redirect-Address-Type", 433, 0, "Enumerated", "must"),
    ("Redirect-Server", 434, 0, "Grouped", "must"),
    ("Redirect-Server-Address", 435, 0, "UTF8String", "must"),
    ("Requested-Action", 436, 0, "Enumerated", "must"),
    ("Requested-Service-Unit", 437, 0, "Grouped", "must"),
    ("Restriction-Filter-Rule", 438, 0, "IPFilterRule", "must"),
    ("Service-Identifier", 439, 0, "Unsigned32", "must"),
    ("Service-Parameter-Info", 440, 0, "Grouped", "may"),
    ("Service-Parameter-Type", 441, 0, "Unsigned32", "may"),
    ("Service-Parameter-Value", 442, 0, "OctetString", "may"),
    ("Subscription-Id", 443, 0, "Grouped", "must"),
    ("Subscription-Id-Data", 444, 0, "UTF8String", "must"),
    ("Unit-Value", 445, 0, "Grouped", "must"),
    ("Used-Service-Unit", 446, 0, "Grouped", "must"),
    ("Value-Digits", 447, 0, "Integer64", "must"),
    ("Validity-Time", 448, 0, "Unsigned32", "must"),
    ("Final-Unit-Action", 449, 0, "Enumerated", "must"),
    ("Subscription-Id-Type", 450, 0, "Enumerated", "must"),
    ("Tariff-Time-Change", 451, 0, "Time", "must"),
    ("Tariff-Change-Usage", 452, 0, "Enumerated", "must"),
    ("G-S-U-Pool-Identifier", 453, 0, "Unsigned32", "must"),
    ("CC-Unit-Type", 454, 0, "Enumerated", "must"),
    ("Multiple-Services-Indicator", 455, 0, "Enumerated", "must"),
    ("Multiple-Services-Credit-Control", 456, 0, "Grouped", "must"),
    ("G-S-U-Pool-Reference", 457, 0, "Grouped", "must"),
    ("User-Equipment-Info", 458, 0, "Grouped", "may"),
    ("User-Equipment-Info-Type", 459, 0, "Enumerated", "may"),
    ("User-Equipment-Info-Value", 460, 0, "OctetString", "may"),
    ("Service-Context-Id", 461, 0, "UTF8String", "must"),
    # RFC 8506 additions (IANA Diameter AVP codes 653-669)
    ("User-Equipment-Info-Extension", 653, 0, "Grouped", "may"),
    ("User-Equipment-Info-IMEISV", 654, 0, "OctetString", "may"),
    ("User-Equipment-Info-MAC", 655, 0, "OctetString", "may"),
    ("User-Equipment-Info-EUI64", 656, 0, "OctetString", "may"),
    ("User-Equipment-Info-ModifiedEUI64", 657, 0, "OctetString", "may"),
    ("User-Equipment-Info-IMEI", 658, 0, "OctetString", "may"),
    ("Subscription-Id-Extension", 659, 0, "Grouped", "may"),
    ("Subscription-Id-E164", 660, 0, "UTF8String", "may"),
    ("Subscription-Id-IMSI", 661, 0, "UTF8String", "may"),
    ("Subscription-Id-SIP-URI", 662, 0, "UTF8String", "may"),
    ("Subscription-Id-NAI", 663, 0, "UTF8String", "may"),
    ("Subscription-Id-Private", 664, 0, "UTF8String", "may"),
    ("Redirect-Server-Extension", 665, 0, "Grouped", "may"),
    ("Redirect-Address-IPAddress", 666, 0, "Address", "may"),
    ("Redirect-Address-URL", 667, 0, "UTF8String", "may"),
    ("Redirect-Address-SIP-URI", 668, 0, "DiameterURI", "may"),
    ("QoS-Final-Unit-Indication", 669, 0, "Grouped", "may"),
    # --- 3GPP TS 29.061 RADIUS-derived attributes carried in Gy (vendor 10415) ---
    ("3GPP-IMSI", 1, V3GPP, "UTF8String", "must"),
    ("3GPP-Charging-Id", 2, V3GPP, "OctetString", "must"),
    ("3GPP-PDP-Type", 3, V3GPP, "Enumerated", "must"),
    ("3GPP-CG-Address", 4, V3GPP, "OctetString", "must"),
    ("3GPP-GPRS-Negotiated-QoS-Profile", 5, V3GPP, "UTF8String", "must"),
    ("3GPP-SGSN-Address", 6, V3GPP, "OctetString", "must"),
    ("3GPP-GGSN-Address", 7, V3GPP, "OctetString", "must"),
    ("3GPP-IMSI-MCC-MNC", 8, V3GPP, "UTF8String", "must"),
    ("3GPP-GGSN-MCC-MNC", 9, V3GPP, "UTF8String", "must"),
    ("3GPP-NSAPI", 10, V3GPP, "OctetString", "must"),
    ("3GPP-Session-Stop-Indicator", 11, V3GPP, "OctetString", "must"),
    ("3GPP-Selection-Mode", 12, V3GPP, "UTF8String", "must"),
    ("3GPP-Charging-Characteristics", 13, V3GPP, "UTF8String", "must"),
    ("3GPP-SGSN-MCC-MNC", 18, V3GPP, "UTF8String", "must"),
    ("3GPP-RAT-Type", 21, V3GPP, "OctetString", "must"),
    ("3GPP-User-Location-Info", 22, V3GPP, "OctetString", "must"),
    ("3GPP-MS-TimeZone", 23, V3GPP, "OctetString", "must"),
    # --- 3GPP TS 32.299 Gy / Ro (vendor 10415) ---
    ("Event-Type", 823, V3GPP, "Grouped", "must"),
    ("SIP-Method", 824, V3GPP, "UTF8String", "must"),
    ("Event", 825, V3GPP, "UTF8String", "must"),
    ("Role-Of-Node", 829, V3GPP, "Enumerated", "must"),
    ("User-Session-Id", 830, V3GPP, "UTF8String", "must"),
    ("Calling-Party-Address", 831, V3GPP, "UTF8String", "must"),
    ("Called-Party-Address", 832, V3GPP, "UTF8String", "must"),
    ("Time-Stamps", 833, V3GPP, "Grouped", "must"),
    ("SIP-Request-Timestamp", 834, V3GPP, "Time", "must"),
    ("SIP-Response-Timestamp", 835, V3GPP, "Time", "must"),
    ("Application-Server", 836, V3GPP, "UTF8String", "must"),
    ("Inter-Operator-Identifier", 838, V3GPP, "Grouped", "must"),
    ("Originating-IOI", 839, V3GPP, "UTF8String", "must"),
    ("Terminating-IOI", 840, V3GPP, "UTF8String", "must"),
    ("IMS-Charging-Identifier", 841, V3GPP, "UTF8String", "must"),
    ("CG-Address", 846, V3GPP, "Address", "must"),
    ("GGSN-Address", 847, V3GPP, "Address", "must"),
    ("Application-Server-Information", 850, V3GPP, "Grouped", "must"),
    ("Cause-Code", 861, V3GPP, "Integer32", "must"),
    ("Node-Functionality", 862, V3GPP, "Enumerated", "must"),
    ("Service-Specific-Data", 863, V3GPP, "UTF8String", "must"),
    ("Time-Quota-Threshold", 868, V3GPP, "Unsigned32", "must"),
    ("Volume-Quota-Threshold", 869, V3GPP, "Unsigned32", "must"),
    ("Trigger-Type", 870, V3GPP, "Enumerated", "must"),
    ("Quota-Holding-Time", 871, V3GPP, "Unsigned32", "must"),
    ("Reporting-Reason", 872, V3GPP, "Enumerated", "must"),
    ("Service-Information", 873, V3GPP, "Grouped", "must"),
    ("PS-Information", 874, V3GPP, "Grouped", "must"),
    ("WLAN-Information", 875, V3GPP, "Grouped", "must"),
    ("IMS-Information", 876, V3GPP, "Grouped", "must"),
    ("MMS-Information", 877, V3GPP, "Grouped", "must"),
    ("LCS-Information", 878, V3GPP, "Grouped", "must"),
    ("PoC-Information", 879, V3GPP, "Grouped", "must"),
    ("MBMS-Information", 880, V3GPP, "Grouped", "must"),
    ("Quota-Consumption-Time", 881, V3GPP, "Unsigned32", "must"),
    ("Expires", 888, V3GPP, "Unsigned32", "must"),
    ("Address-Data", 897, V3GPP, "UTF8String", "must"),
    ("Address-Domain", 898, V3GPP, "Grouped", "must"),
    ("Address-Type", 899, V3GPP, "Enumerated", "must"),
    ("Charging-Rule-Base-Name", 1004, V3GPP, "UTF8String", "must"),
    ("QoS-Information", 1016, V3GPP, "Grouped", "must"),
    ("PDN-Connection-ID", 1065, V3GPP, "OctetString", "may"),
    ("Domain-Name", 1200, V3GPP, "UTF8String", "may"),
    ("Recipient-Address", 1201, V3GPP, "Grouped", "may"),
    ("Submission-Time", 1202, V3GPP, "Time", "may"),
    ("Unit-Quota-Threshold", 1226, V3GPP, "Unsigned32", "may"),
    ("PDP-Address", 1227, V3GPP, "Address", "may"),
    ("SGSN-Address", 1228, V3GPP, "Address", "may"),
    ("PDP-Context-Type", 1247, V3GPP, "Enumerated", "may"),
    ("Service-Specific-Info", 1249, V3GPP, "Grouped", "may"),
    ("Service-Specific-Type", 1257, V3GPP, "Unsigned32", "may"),
    ("Trigger", 1264, V3GPP, "Grouped", "may"),
    ("Base-Time-Interval", 1265, V3GPP, "Unsigned32", "may"),
    ("Envelope-Reporting", 1268, V3GPP, "Enumerated", "may"),
    ("Time-Quota-Mechanism", 1270, V3GPP, "Grouped", "may"),
    ("Time-Quota-Type", 1271, V3GPP, "Enumerated", "may"),
    ("Terminal-Information", 1401, V3GPP, "Grouped", "must"),
    ("IMEI", 1402, V3GPP, "UTF8String", "must"),
    ("Software-Version", 1403, V3GPP, "UTF8String", "must"),
    ("SMS-Information", 2000, V3GPP, "Grouped", "may"),
    ("Data-Coding-Scheme", 2001, V3GPP, "Integer32", "may"),
    ("SM-Message-Type", 2007, V3GPP, "Enumerated", "may"),
    ("Originator-SCCP-Address", 2008, V3GPP, "Address", "may"),
    ("Recipient-SCCP-Address", 2010, V3GPP, "Address", "may"),
    ("Reply-Path-Requested", 2011, V3GPP, "Enumerated", "may"),
    ("SM-Discharge-Time", 2012, V3GPP, "Time", "may"),
    ("SM-Protocol-ID", 2013, V3GPP, "OctetString", "may"),
    ("SM-Status", 2014, V3GPP, "OctetString", "may"),
    ("SMS-Node", 2016, V3GPP, "Enumerated", "may"),
    ("SMSC-Address", 2017, V3GPP, "Address", "may"),
    ("Client-Address", 2018, V3GPP, "Address", "may"),
    ("Number-Of-Messages-Sent", 2019, V3GPP, "Unsigned32", "may"),
    ("Refund-Information", 2022, V3GPP, "OctetString", "may"),
    ("Recipient-Info", 2026, V3GPP, "Grouped", "may"),
    ("Originator-Received-Address", 2027, V3GPP, "Grouped", "may"),
    ("Change-Condition", 2037, V3GPP, "Integer32", "may"),
    ("Diagnostics", 2039, V3GPP, "Integer32", "may"),
    ("Start-Time", 2041, V3GPP, "Time", "may"),
    ("Stop-Time", 2042, V3GPP, "Time", "may"),
    ("Serving-Node-Type", 2047, V3GPP, "Enumerated", "may"),
    ("Dynamic-Address-Flag", 2051, V3GPP, "Enumerated", "may"),
    ("Node-Id", 2064, V3GPP, "UTF8String", "may"),
    ("SGW-Change", 2065, V3GPP, "Enumerated", "may"),
    ("Charging-Characteristics-Selection-Mode", 2066, V3GPP, "Enumerated", "may"),
    ("IMSI-Unauthenticated-Flag", 2308, V3GPP, "Enumerated", "may"),
    ("Outgoing-Session-Id", 2320, V3GPP, "UTF8String", "may"),
    ("Low-Priority-Indicator", 2602, V3GPP, "Enumerated", "may"),
    ("User-Location-Info-Time", 2812, V3GPP, "Time", "may"),
    ("3GPP-PS-Data-Off-Status", 4406, V3GPP, "Enumerated", "may"),
)

# Members of the grouped AVPs an OCS builds or reads (RFC 8506 §8, TS 32.299 §7.2); not exhaustive
# for the big 3GPP groups, whose members are all in AVPS above anyway.
GROUPS: dict[str, tuple[str, ...]] = {
    "Vendor-Specific-Application-Id": ("Vendor-Id", "Auth-Application-Id", "Acct-Application-Id"),
    "Proxy-Info": ("Proxy-Host", "Proxy-State"),
    "Experimental-Result": ("Vendor-Id", "Experimental-Result-Code"),
    "Subscription-Id": ("Subscription-Id-Type", "Subscription-Id-Data"),
    "Subscription-Id-Extension": ("Subscription-Id-E164", "Subscription-Id-IMSI",
                                  "Subscription-Id-SIP-URI", "Subscription-Id-NAI",
                                  "Subscription-Id-Private"),
    "Requested-Service-Unit": ("CC-Time", "CC-Money", "CC-Total-Octets", "CC-Input-Octets",
                               "CC-Output-Octets", "CC-Service-Specific-Units"),
    "Granted-Service-Unit": ("Tariff-Time-Change", "CC-Time", "CC-Money", "CC-Total-Octets",
                             "CC-Input-Octets", "CC-Output-Octets", "CC-Service-Specific-Units"),
    "Used-Service-Unit": ("Tariff-Change-Usage", "CC-Time", "CC-Money", "CC-Total-Octets",
                          "CC-Input-Octets", "CC-Output-Octets", "CC-Service-Specific-Units",
                          "Reporting-Reason"),
    "CC-Money": ("Unit-Value", "Currency-Code"),
    "Unit-Value": ("Value-Digits", "Exponent"),
    "Cost-Information": ("Unit-Value", "Currency-Code", "Cost-Unit"),
    "Final-Unit-Indication": ("Final-Unit-Action", "Restriction-Filter-Rule", "Filter-Id",
                              "Redirect-Server"),
    "Redirect-Server": ("Redirect-Address-Type", "Redirect-Server-Address"),
    "G-S-U-Pool-Reference": ("G-S-U-Pool-Identifier", "CC-Unit-Type", "Unit-Value"),
    "Multiple-Services-Credit-Control": (
        "Granted-Service-Unit", "Requested-Service-Unit", "Used-Service-Unit",
        "Tariff-Change-Usage", "Service-Identifier", "Rating-Group", "G-S-U-Pool-Reference",
        "Validity-Time", "Result-Code", "Final-Unit-Indication", "Time-Quota-Threshold",
        "Volume-Quota-Threshold", "Unit-Quota-Threshold", "Quota-Holding-Time",
        "Quota-Consumption-Time", "Reporting-Reason", "Trigger", "Envelope-Reporting",
        "Time-Quota-Mechanism"),
    "Trigger": ("Trigger-Type",),
    "Service-Information": ("Subscription-Id", "PS-Information", "IMS-Information",
                            "SMS-Information", "WLAN-Information", "MMS-Information",
                            "LCS-Information", "PoC-Information", "MBMS-Information"),
    "PS-Information": ("3GPP-Charging-Id", "PDN-Connection-ID", "Node-Id", "3GPP-PDP-Type",
                       "PDP-Address", "Dynamic-Address-Flag", "QoS-Information", "SGSN-Address",
                       "GGSN-Address", "CG-Address", "Serving-Node-Type", "SGW-Change",
                       "3GPP-IMSI-MCC-MNC", "IMSI-Unauthenticated-Flag", "3GPP-GGSN-MCC-MNC",
                       "3GPP-NSAPI", "Called-Station-Id", "3GPP-Session-Stop-Indicator",
                       "3GPP-Selection-Mode", "3GPP-Charging-Characteristics",
                       "Charging-Characteristics-Selection-Mode", "3GPP-SGSN-MCC-MNC",
                       "3GPP-MS-TimeZone", "Charging-Rule-Base-Name", "3GPP-User-Location-Info",
                       "User-Location-Info-Time", "3GPP-RAT-Type", "PDP-Context-Type",
                       "User-Equipment-Info", "Terminal-Information", "Start-Time", "Stop-Time",
                       "Change-Condition", "Diagnostics", "Low-Priority-Indicator"),
    "IMS-Information": ("Event-Type", "Role-Of-Node", "Node-Functionality", "User-Session-Id",
                        "Outgoing-Session-Id", "Calling-Party-Address", "Called-Party-Address",
                        "Time-Stamps", "Application-Server-Information",
                        "Inter-Operator-Identifier", "IMS-Charging-Identifier", "Cause-Code"),
    "SMS-Information": ("SMS-Node", "Client-Address", "Originator-SCCP-Address",
                        "Recipient-SCCP-Address", "SMSC-Address", "Data-Coding-Scheme",
                        "SM-Discharge-Time", "SM-Message-Type", "SM-Protocol-ID",
                        "Reply-Path-Requested", "SM-Status", "Number-Of-Messages-Sent",
                        "Recipient-Info", "Originator-Received-Address"),
    "Event-Type": ("SIP-Method", "Event", "Expires"),
    "Time-Stamps": ("SIP-Request-Timestamp", "SIP-Response-Timestamp"),
    "Inter-Operator-Identifier": ("Originating-IOI", "Terminating-IOI"),
    "Application-Server-Information": ("Application-Server",),
    "User-Equipment-Info": ("User-Equipment-Info-Type", "User-Equipment-Info-Value"),
    "Terminal-Information": ("IMEI", "Software-Version"),
    "Recipient-Info": ("Recipient-Address",),
    "Recipient-Address": ("Address-Type", "Address-Data", "Address-Domain"),
    "Originator-Received-Address": ("Address-Type", "Address-Data", "Address-Domain"),
    "Address-Domain": ("Domain-Name", "3GPP-IMSI-MCC-MNC"),
}

# --- value rules: what a peer may send in the AVPs we keep, before any of it reaches the store ---
# Byte-length bounds (min, max) of a text payload. Every DiameterIdentity is 1..255 (an FQDN or
# realm, RFC 1035 §2.3.4 / RFC 6733 §4.3.1) unless listed. The others, and why:
# - Session-Id: a part of LMDB keys (at most 511 bytes) with up to 13 bytes of ours around it;
#   real ones are a DiameterIdentity (<= 255) and a few numbers (RFC 6733 §8.8), so 400 is room.
# - Subscription-Id-Data / User-Name: looked up as LMDB keys (account ids and aliases, <= 511).
#   A NAI is at most 253 octets (RFC 7542 §2.3, the RADIUS attribute limit); SIP URIs and private
#   ids get the same. By Subscription-Id-Type the tighter bound of the matching
#   Subscription-Id-Extension member applies: E.164 has at most 15 digits (ITU-T E.164 §6), plus
#   the leading "+" some gateways send; an IMSI at most 15 digits (3GPP TS 23.003 §2.2).
# - Service-Context-Id: "<ext>.<MNC>.<MCC>.<release>.32251@3gpp.org" (RFC 8506 §8.42) is short;
#   255 leaves room and keeps it out of the way of a message's size.
# Empty is refused for all of them: none has a meaning empty, and an empty LMDB key is an error.
DIAMETER_IDENTITY_LENGTH = (1, 255)
LENGTHS: dict[str, tuple[int, int]] = {
    "Session-Id": (1, 400),
    "User-Name": (1, 253),
    "Service-Context-Id": (1, 255),
    "Subscription-Id-Data": (1, 253),
    "Subscription-Id-E164": (1, 16),
    "Subscription-Id-IMSI": (1, 15),
    "Subscription-Id-SIP-URI": (1, 253),
    "Subscription-Id-NAI": (1, 253),
    "Subscription-Id-Private": (1, 253),
}
# Text AVPs that may not hold NUL (our store's key separator); no DiameterIdentity may either (an
# FQDN has none).
NO_NUL: frozenset[str] = frozenset({"Session-Id"})


def _ints(enum: type[IntEnum]) -> frozenset[int]:
    return frozenset(int(m) for m in enum)


# Enumerated AVPs whose values we check (the values are constants' IntEnums); a value outside is
# 5004 (RFC 6733 §4.3.1: an Enumerated AVP's definition lists its values).
ENUMS: dict[str, frozenset[int]] = {
    "CC-Request-Type": _ints(C.CCRequestType),
    "Requested-Action": _ints(C.RequestedAction),
    "Subscription-Id-Type": _ints(C.SubscriptionIdType),
    "Termination-Cause": _ints(C.TerminationCause),
    "Multiple-Services-Indicator": _ints(C.MultipleServicesIndicator),
    "Reporting-Reason": _ints(C.ReportingReason),
    "Tariff-Change-Usage": _ints(C.TariffChangeUsage),
    "Disconnect-Cause": _ints(C.DisconnectCause),
}
# fmt: on

_TEXT_TYPES = frozenset({"UTF8String", "OctetString", "DiameterIdentity", "DiameterURI"})
_NO_BOUND = (0, 0xFFFFFF)


@dataclass(slots=True, frozen=True)
class AvpDef:
    name: str
    code: int
    vendor: int
    type: str
    mbit: str  # "must" | "may" | "mustnot"
    min_len: int = 0  # payload bytes, text types only
    max_len: int = 0xFFFFFF
    nul_ok: bool = True
    values: frozenset[int] | None = None  # Enumerated: the values we accept; None = not checked

    @property
    def key(self) -> int:
        return avp_key(self.code, self.vendor)

    @property
    def flags(self) -> int:
        """The flags we send: V when vendor-specific, M when the rule says must."""
        return (0x80 if self.vendor else 0) | (0x40 if self.mbit == "must" else 0)


def avp_key(code: int, vendor: int = 0) -> int:
    """One int per (code, vendor): cheap dict/set keys on the hot path."""
    return code | (vendor << 32)


BY_KEY: dict[int, AvpDef] = {}
BY_NAME: dict[str, AvpDef] = {}
for _row in AVPS:
    _name, _type = _row[0], _row[3]
    _lo, _hi = LENGTHS.get(_name, DIAMETER_IDENTITY_LENGTH if _type == "DiameterIdentity" else _NO_BOUND)
    assert (_lo, _hi) == _NO_BOUND or _type in _TEXT_TYPES, _row
    assert _name not in ENUMS or _type == "Enumerated", _row
    _d = AvpDef(*_row, min_len=_lo, max_len=_hi,
                nul_ok=_name not in NO_NUL and _type != "DiameterIdentity", values=ENUMS.get(_name))
    assert _d.type in TYPES, _d
    assert _d.key not in BY_KEY and _d.name not in BY_NAME, _d
    BY_KEY[_d.key] = _d
    BY_NAME[_d.name] = _d
assert set(LENGTHS) | NO_NUL | set(ENUMS) <= set(BY_NAME), "a value rule names an unknown AVP"
del _row, _d, _name, _type, _lo, _hi

KNOWN_KEYS: frozenset[int] = frozenset(BY_KEY)
GROUPED_KEYS: frozenset[int] = frozenset(k for k, d in BY_KEY.items() if d.type == "Grouped")


def lookup(code: int, vendor: int = 0) -> AvpDef | None:
    return BY_KEY.get(avp_key(code, vendor))


def problem(d: AvpDef, data: bytes, value: object) -> str | None:
    """Why a decoded value breaks its AVP's rules (LENGTHS, NO_NUL, ENUMS), or None."""
    if d.values is not None and value not in d.values:
        return f"{value} is not one of its values ({min(d.values)}..{max(d.values)})"
    n = len(data)
    if n < d.min_len or n > d.max_len:
        return "empty" if n == 0 else f"{n} bytes, not {d.min_len}..{d.max_len}"
    if not d.nul_ok and b"\0" in data:
        return "contains NUL"
    return None


def by_name(name: str) -> AvpDef:
    """Raise KeyError for a name not in the table."""
    return BY_NAME[name]
