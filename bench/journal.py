"""The engine's journal (balance.journal): cost of one durable batch record, against a raw floor.

    python -m bench.journal [--runs 5] [--batches 300] [--per-request 200]

Each batch is one record of batch x --per-request bytes (the after-images a batch of CCR-Us
leaves), appended and synced; the baseline in the same run is the floor any journal pays: one
pwrite of the same bytes plus one fdatasync on a plain file. Prints wall and CPU µs per request
(the batch's cost / batch) for batches of 64 and 16, medians of alternated runs, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from balance.journal import Journal


def _journal(path: Path, record: bytes, batches: int) -> tuple[float, float]:
    with Journal(path) as j:
        w, c = time.perf_counter(), time.process_time()
        for _ in range(batches):
            j.append([record])
        return time.perf_counter() - w, time.process_time() - c


def _floor(path: Path, record: bytes, batches: int) -> tuple[float, float]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        w, c = time.perf_counter(), time.process_time()
        off = 0
        for _ in range(batches):
            os.pwrite(fd, record, off)
            off += len(record)
            os.fdatasync(fd)
        return time.perf_counter() - w, time.process_time() - c
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--per-request", type=int, default=200)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ocs-journal-bench-") as tmp:
        for batch in (64, 16):
            record = os.urandom(batch * a.per_request)
            jw, jc, fw, fc = [], [], [], []
            for r in range(a.runs):
                w, c = _journal(Path(tmp) / f"j{batch}-{r}", record, a.batches)
                jw.append(w / a.batches / batch * 1e6)
                jc.append(c / a.batches / batch * 1e6)
                w, c = _floor(Path(tmp) / f"f{batch}-{r}", record, a.batches)
                fw.append(w / a.batches / batch * 1e6)
                fc.append(c / a.batches / batch * 1e6)
            j_w, j_c, f_w, f_c = (statistics.median(x) for x in (jw, jc, fw, fc))
            print(f"batch {batch:2d} ({len(record)} B per record), µs per request, wall / CPU:")
            print(f"  pwrite + fdatasync (floor)   {f_w:6.2f} / {f_c:5.2f}")
            print(f"  Journal.append               {j_w:6.2f} / {j_c:5.2f}   x{j_w / f_w:.2f} wall of the floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
