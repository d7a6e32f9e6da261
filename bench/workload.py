"""What the generated traffic looks like: the service mix and the shape of each session.

A session is a script decided when it starts (so a seeded run is reproducible): data and voice
sessions are CCR-I, k CCR-U each reporting used units and asking for more, then CCR-T; SMS is one
CCR-EVENT with direct debiting. What a session actually reports is capped by what was granted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

INITIAL, UPDATE, TERMINATION, EVENT = 1, 2, 3, 4

DATA, VOICE, SMS = "data", "voice", "sms"


@dataclass(slots=True, frozen=True)
class Service:
    name: str
    rating_group: int
    unit: str                 # seconds | octets | events
    context_id: str           # Service-Context-Id (TS 32.299)
    requested: int            # units asked for in each RSU
    report_min: int           # units used between two reports, drawn uniformly
    report_max: int


SERVICES: dict[str, Service] = {
    DATA: Service(DATA, 200, "octets", "32251@3gpp.org", 10_000_000, 100_000, 5_000_000),
    VOICE: Service(VOICE, 100, "seconds", "32260@3gpp.org", 300, 5, 180),
    SMS: Service(SMS, 300, "events", "32274@3gpp.org", 1, 1, 1),
}


@dataclass(slots=True, frozen=True)
class Mix:
    """Share of new sessions per service, and CCR-Us per data / voice session."""

    data: float = 0.6
    voice: float = 0.25
    sms: float = 0.15
    data_updates: int = 4
    voice_updates: int = 2

    @classmethod
    def parse(cls, text: str) -> Mix:
        """"data=0.6,voice=0.25,sms=0.15,data_updates=4,voice_updates=2" (any subset)."""
        values: dict[str, Any] = {}  # float shares, int update counts: each its field's type
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, raw = part.partition("=")
            name = name.strip()
            if not sep or name not in cls.__dataclass_fields__:
                raise ValueError(f"bad mix item {part!r}: want data=, voice=, sms=, "
                                 "data_updates=, voice_updates=")
            try:
                values[name] = int(raw) if name.endswith("_updates") else float(raw)
            except ValueError:
                raise ValueError(f"bad mix value {part!r}") from None
            if values[name] < 0:
                raise ValueError(f"negative mix value {part!r}")
        mix = cls(**values)
        if mix.data + mix.voice + mix.sms <= 0:
            raise ValueError("mix has no service with a positive share")
        return mix

    def requests_per_session(self) -> float:
        total = self.data + self.voice + self.sms
        return (self.data * (self.data_updates + 2) + self.voice * (self.voice_updates + 2)
                + self.sms) / total


class SessionPicker:
    """Draws the next session's service, account and planned usage from one seeded generator."""

    def __init__(self, mix: Mix, accounts: int, seed: int) -> None:
        if accounts < 1:
            raise ValueError("need at least one account")
        self.mix = mix
        self.accounts = accounts
        self.rng = random.Random(seed)
        total = mix.data + mix.voice + mix.sms
        self._cut_data = mix.data / total
        self._cut_voice = (mix.data + mix.voice) / total

    def service(self) -> Service:
        r = self.rng.random()
        if r < self._cut_data:
            return SERVICES[DATA]
        if r < self._cut_voice:
            return SERVICES[VOICE]
        return SERVICES[SMS]

    def updates(self, service: Service) -> int:
        if service.name == DATA:
            return self.mix.data_updates
        if service.name == VOICE:
            return self.mix.voice_updates
        return 0

    def account(self) -> int:
        return self.rng.randrange(self.accounts)

    def usage(self, service: Service) -> int:
        return self.rng.randint(service.report_min, service.report_max)


def account_id(index: int) -> str:
    """E.164 id of the index-th bench account: fixed width, so templates can be patched in place."""
    return f"4917{index:08d}"


ACCOUNT_ID_WIDTH = len(account_id(0))
