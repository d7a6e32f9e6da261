"""What the charging rules need beside the transaction: settings, LMDB handles, tariff versions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ocs.charging.settings import ChargingSettings

if TYPE_CHECKING:
    from rating.rater import Rater


@dataclass(slots=True)
class Context:
    """What the writer-thread code needs: settings, LMDB handles, and the tariff versions."""

    cfg: ChargingSettings  # built by the engine from its ServeConfig
    dbs: dict[str, Any]    # db name -> the environment's lmdb handle (balance.schema names)
    raters: Callable[[int | None], Rater | None]  # version (None = current) -> Rater | None
