"""Instants at the edges: ISO 8601 UTC text <-> unix seconds (the CLI and the API share them)."""

from __future__ import annotations

from datetime import UTC, datetime

LAST_INSTANT = 253402300799  # 9999-12-31T23:59:59Z: what every later display of a time can show


def parse_instant(text: str, what: str) -> int:
    """ISO 8601 -> unix seconds (no zone = UTC), 1970 .. 9999 UTC; ValueError naming `what`."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"bad {what} {text!r}: expected ISO 8601 like 2026-12-31T23:59:59Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ts = int(when.timestamp())
    if not 0 <= ts <= LAST_INSTANT:
        raise ValueError(f"bad {what} {text!r}: must be between 1970 and 9999 (UTC)")
    return ts


def format_instant(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
