"""Adding up the parts of a usage summary (the usage.summary command answers a part per call).

Its own module, importing nothing, so the API process and the CLI use it without loading the
charging engine's modules (LMDB, numba)."""

from __future__ import annotations

from typing import Any

UsageKey = tuple[int, str, str]  # rating group, unit, currency


def add_usage(sums: dict[UsageKey, dict[str, Any]], groups: list[dict[str, Any]]) -> None:
    """Add one usage.summary call's groups into `sums` (the caller follows `next`)."""
    for g in groups:
        k = (g["rating_group"], g["unit"], g["currency"])
        if k in sums:
            for f in ("cdrs", "used_units", "bundle_units", "amount"):
                sums[k][f] += g[f]
        else:
            sums[k] = dict(g)
