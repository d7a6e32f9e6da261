"""Diameter messages as a pcap for tshark, the independent dissector the protocol and front tests
check our bytes against: shared by the tests of every folder (see conftest.py)."""

from __future__ import annotations

import struct
from pathlib import Path


def write_pcap(path: Path, messages: list[tuple[bool, bytes]]) -> None:
    """One TCP segment per message; seq/ack advance by payload length; IPv4 checksum correct."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    cli, srv = (b"\x0a\x00\x00\x01", 40000), (b"\x0a\x00\x00\x02", 3868)
    seq = {True: 1000, False: 5000}
    for i, (from_client, payload) in enumerate(messages):
        src, dst = (cli, srv) if from_client else (srv, cli)
        tcp = struct.pack(">HHIIBBHHH", src[1], dst[1], seq[from_client], seq[not from_client],
                          5 << 4, 0x18, 65535, 0, 0)  # fmt: skip
        seq[from_client] += len(payload)
        iph = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), i, 0, 64, 6, 0, src[0], dst[0])
        s = sum(struct.unpack(">10H", iph))
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        iph = iph[:10] + struct.pack(">H", ~s & 0xFFFF) + iph[12:]
        frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + iph + tcp + payload
        out.append(struct.pack("<IIII", 1700000000 + i, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
