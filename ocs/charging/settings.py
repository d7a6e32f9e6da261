"""The settings the credit-control rules read: a few values of `ocs serve`'s ServeConfig.

The rules (credit, sweeper) take this instead of the whole server configuration, so they do not
depend on how the server is configured (listen addresses, peers, overload limits, CDR export);
the engine builds it once from its ServeConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ocs.config import ServeConfig


@dataclass(slots=True, frozen=True)
class ChargingSettings:
    origin_host: str
    origin_realm: str
    validity_time: int
    session_timeout: int | None      # None: 2 x validity_time (RFC 8506 Tcc)
    quota_holding_time: int          # 0 = not sent
    quota_threshold_percent: int     # 0 = not sent
    default_quota: dict[str, int]    # per unit kind, when the CCR asks for no amount
    max_quota: dict[str, int]        # per unit kind, the most one grant gives
    dedup_retention: int             # seconds answers of closed sessions stay replayable

    def timeout(self) -> int:
        return self.session_timeout if self.session_timeout else 2 * self.validity_time

    @classmethod
    def of(cls, cfg: ServeConfig) -> ChargingSettings:
        """The values of `cfg` the rules read (same names as ServeConfig's fields)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})
