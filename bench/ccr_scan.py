"""The batch codec of the fast path (protocol.ccr_batch, protocol.cca_batch) against the record codec.

    python -m bench.ccr_scan [--runs 7] [--batch 64] [--batches 300]

A batch of distinct Gy CCR-Us (bench.codec's typical one, with PS-Information) is read by one
scan() call, and by decode_ccr frame by frame (the engine's way today); the median of the runs,
alternated, and the ratio of the two are printed. scan() includes joining the frames into one
buffer (what the engine would pay); to_ccr (records for the general path) is timed apart.
The answers (a CCA-U with one MSCC: GSU, Rating-Group, Validity-Time, Result-Code) are written by
one cca_batch.encode() call and by encode_cca per answer (the engine's way today).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.codec import typical_ccr_u
from protocol import cca_batch, ccr_batch
from protocol.cca import encode_cca
from protocol.ccr import decode_ccr
from protocol.records import CCA, MSCCAnswer, Units


def frames(batch: int) -> list[bytes]:
    base = typical_ccr_u()
    sid = b"pgw1.operator.example;1700000000;42"
    return [base.replace(sid, sid[:-2] + b"%02d" % (i % 100)) for i in range(batch)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=300)
    a = ap.parse_args(argv)
    fs = frames(a.batch)
    rows = ccr_batch.scan(fs)  # compile (cached) and check that the shape is taken
    assert rows[:, ccr_batch.F_OK].all(), "the typical CCR-U must be a fast-path shape"
    n = a.batch * a.batches
    ccas = [CCA(decode_ccr(f).session_id, 2001, "ocs.operator.example", "operator.example", 2, 3,
                mscc=[MSCCAnswer(2001, 32, None, Units(total_octets=10_000_000), 900)]) for f in fs]
    answers = np.stack([cca_batch.answer_row(c, False) for c in ccas])
    origin = cca_batch.origin_avps("ocs.operator.example", "operator.example")
    assert cca_batch.encode(fs, rows, answers, origin) == [encode_cca(c, 0x1234, 0x5678) for c in ccas]
    scan_us, decode_us, records_us, batch_enc_us, enc_us = [], [], [], [], []
    for _ in range(a.runs):
        t = time.perf_counter()
        for _ in range(a.batches):
            ccr_batch.scan(fs)
        scan_us.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(a.batches):
            for f in fs:
                decode_ccr(f)
        decode_us.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(a.batches):
            for f, r in zip(fs, rows, strict=True):
                ccr_batch.to_ccr(f, r)
        records_us.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(a.batches):
            cca_batch.encode(fs, rows, answers, origin)
        batch_enc_us.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(a.batches):
            for c in ccas:
                encode_cca(c, 0x1234, 0x5678)
        enc_us.append((time.perf_counter() - t) / n * 1e6)
    s, d, r, be, e = (statistics.median(x) for x in (scan_us, decode_us, records_us, batch_enc_us, enc_us))
    print(f"batch {a.batch}, {a.runs} runs x {n} frames (medians, µs per frame):")
    print(f"  decode_ccr (baseline)     {d:7.2f}")
    print(f"  ccr_batch.scan            {s:7.2f}   x{s / d:.3f} of the baseline")
    print(f"  to_ccr after the scan     {r:7.2f}   (records for the general path)")
    print(f"  encode_cca (baseline)     {e:7.2f}")
    print(f"  cca_batch.encode          {be:7.2f}   x{be / e:.3f} of the baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
