"""A whole message on the generic path: header + AVP tree."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.avp import Avp, decode_avps, encode_avps, find, find_all
from protocol.header import HEADER_LEN, Header, decode_header, encode_header


@dataclass(slots=True)
class Message:
    header: Header
    avps: list[Avp] = field(default_factory=list)

    def find(self, name: str) -> Avp | None:
        return find(self.avps, name)

    def find_all(self, name: str) -> list[Avp]:
        return find_all(self.avps, name)


def decode_message(frame: bytes) -> Message:
    header = decode_header(frame)
    return Message(header, decode_avps(frame, HEADER_LEN, header.length))


def encode_message(msg: Message) -> bytes:
    """Length is recomputed; everything else is taken from the header as given."""
    body = encode_avps(msg.avps)
    h = msg.header
    return encode_header(HEADER_LEN + len(body), h.flags, h.command_code, h.application_id,
                         h.hop_by_hop, h.end_to_end) + body
