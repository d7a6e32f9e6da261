"""What a run leaves behind: the printed table, a JSON result file, a PNG chart over time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.client import KIND_NAMES, RunResult


@dataclass
class Row:
    """One server (or one configuration) in the comparison table."""

    name: str
    result: RunResult
    extra: dict[str, Any] = field(default_factory=dict)


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned Markdown table (what the README quotes)."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in [head, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "-"


def table(rows: list[Row], ceiling: str | None = None, peer: str | None = None) -> str:
    """Rows = servers; answered req/s, latency (ms), errors, ratios to the ceiling and the peer."""
    by_name = {r.name: r.result.throughput for r in rows}
    ceil_v = by_name.get(ceiling) if ceiling else None
    peer_v = by_name.get(peer) if peer else None
    head = ["server", "answered req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "timeouts",
            "x ceiling", "x peer"]
    body = []
    for r in rows:
        res, s = r.result, r.result.histogram.summary()
        body.append([r.name, f"{res.throughput:,.0f}", _ms(s["p50"]), _ms(s["p99"]),
                     _ms(s["p99_9"]), str(res.errors), str(res.timeouts),
                     _ratio(res.throughput, ceil_v), _ratio(res.throughput, peer_v)])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def summary(res: RunResult) -> str:
    s = res.histogram.summary()
    kinds = ", ".join(f"{KIND_NAMES.get(k, k)} {v}" for k, v in sorted(res.by_kind.items()))
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(res.result_codes.items()))
    return (f"[{res.label}] {res.answered} answered in {res.seconds:.1f} s = "
            f"{res.throughput:,.0f} req/s ({kinds}); latency ms p50 {_ms(s['p50'])} "
            f"p90 {_ms(s['p90'])} p99 {_ms(s['p99'])} p99.9 {_ms(s['p99_9'])} "
            f"max {_ms(s['max'])}; result codes {{{codes}}}; errors {res.errors}, "
            f"timeouts {res.timeouts}, late {res.late}, sent {res.sent}; run id {res.run_id}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def write_chart(path: Path, rows: list[Row], title: str = "ocs bench") -> None:
    """Throughput and p99 per second, one line per run (matplotlib, Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for r in rows:
        series = r.result.series
        if not series:
            continue
        t = [p["t"] for p in series]
        ax_t.plot(t, [p["answered"] for p in series], marker=".", label=r.name)
        ax_l.plot(t, [p["p99_us"] / 1000 for p in series], marker=".", label=r.name)
    ax_t.set_ylabel("answered req/s")
    ax_t.set_title(title)
    ax_t.grid(True, alpha=0.3)
    ax_t.legend(fontsize="small")
    ax_l.set_ylabel("p99 latency (ms)")
    ax_l.set_ylim(bottom=0)
    ax_l.set_xlabel("seconds since start")
    ax_l.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
