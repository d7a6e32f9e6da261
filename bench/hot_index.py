"""The fast path's key index (ocs.charging.hot.index) against a Python dict[bytes, int].

    python -m bench.hot_index [--keys 1000000] [--batch 64] [--runs 5]

Keys shaped like Session-Ids ("pgw1.operator.example;1700000000;<n>"), values their row numbers.
Build: one put_batch of every key from an empty index (growth included) against a dict
comprehension. Memory: the bytes of the index's arrays (the dict's own table plus its key objects
alongside, for scale). Lookups in batches of --batch keys in random order, each batch its own
buffer like a batch of frames, timed three ways for the index (lookup_batch called from Python
once per batch, dispatch included; the same kernel driven from numba, as the engine's kernel
would call it; and get() per key, the general path) and two for the dict (the key objects already
made, so their hashes are cached: the dict's best case; and keys sliced out of the batch buffer
first, what Python would pay coming from frames). Runs alternate; the medians and the median of
the per-run ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from numba import njit

from ocs.charging.hot import index as X


def session_ids(n: int) -> list[bytes]:
    return [b"pgw1.operator.example;1700000000;%d" % i for i in range(n)]


def layout(keys: list[bytes]) -> tuple[X.Bytes, X.Int64s, X.Int64s, X.Int64s]:
    """keys in one buffer: (buf, starts, offs = 0, lens), as a batch of frames would be."""
    starts = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in keys], out=starts[1:])
    lens = np.diff(starts)
    return (np.frombuffer(b"".join(keys), dtype=np.uint8), starts, np.zeros(len(keys), np.int64),
            lens)


@njit(cache=False)  # numba's cache would keep a stale copy of the index's kernels it inlines
def _drive(slots: X.Int64s, arena: X.Bytes, meta: X.Int64s, bufs: X.Bytes,
           buf_starts: X.Int64s, starts: X.Int64s, offs: X.Int64s, lens: X.Int64s,
           out: X.Int64s) -> None:
    """Every batch's lookup_batch from inside numba (batch b: its buffer bufs[buf_starts[b]:],
    its rows starts/offs/lens[b]): the kernel's cost without the Python call."""
    for b in range(lens.shape[0]):
        X.lookup_batch(slots, arena, meta, bufs[buf_starts[b]:buf_starts[b + 1]], starts[b],
                       offs[b], lens[b], out[b])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batches", type=int, default=2000, help="lookup batches per run")
    a = ap.parse_args(argv)
    keys = session_ids(a.keys)
    buf, starts, offs, lens = layout(keys)
    values = np.arange(a.keys, dtype=np.int64)

    X.KeyIndex.empty().put_batch(buf[:starts[2]], starts[:3], offs[:2], lens[:2], values[:2])  # compile
    t = time.perf_counter()
    ix = X.KeyIndex.empty()
    ix.put_batch(buf, starts, offs, lens, values)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    d = {k: i for i, k in enumerate(keys)}
    dict_build_s = time.perf_counter() - t
    assert len(ix) == len(d) == a.keys
    dict_bytes = sys.getsizeof(d) + sum(sys.getsizeof(k) for k in keys)

    rng = np.random.default_rng(14)
    picks = rng.integers(0, a.keys, size=(a.batches, a.batch))
    batch_keys = [[keys[i] for i in row] for row in picks]
    laid = [layout(ks) for ks in batch_keys]
    bufs = np.concatenate([x[0] for x in laid])
    buf_starts = np.zeros(a.batches + 1, dtype=np.int64)
    np.cumsum([x[0].size for x in laid], out=buf_starts[1:])
    b_starts = np.stack([x[1] for x in laid])
    b_offs, b_lens = np.stack([x[2] for x in laid]), np.stack([x[3] for x in laid])
    raw = [x[0].tobytes() for x in laid]
    out = np.empty((a.batches, a.batch), dtype=np.int64)
    _drive(ix.slots, ix.arena, ix.meta, bufs, buf_starts, b_starts, b_offs, b_lens, out)  # compile
    assert (out == picks).all()
    per_call = np.empty(a.batch, dtype=np.int64)
    X.lookup_batch(ix.slots, ix.arena, ix.meta, laid[0][0], laid[0][1], laid[0][2], laid[0][3],
                   per_call)
    assert (per_call == picks[0]).all()

    n = a.batches * a.batch
    lines: dict[str, list[float]] = {k: [] for k in ("call", "kernel", "get", "dict", "slice")}
    for _ in range(a.runs):
        t = time.perf_counter()
        for x in laid:
            X.lookup_batch(ix.slots, ix.arena, ix.meta, x[0], x[1], x[2], x[3], per_call)
        lines["call"].append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        _drive(ix.slots, ix.arena, ix.meta, bufs, buf_starts, b_starts, b_offs, b_lens, out)
        lines["kernel"].append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for ks in batch_keys[: max(1, a.batches // 10)]:
            for k in ks:
                ix.get(k)
        lines["get"].append((time.perf_counter() - t) / (n // a.batches * max(1, a.batches // 10))
                            * 1e6)
        t = time.perf_counter()
        for ks in batch_keys:
            for k in ks:
                d.get(k, -1)
        lines["dict"].append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for r, x in zip(raw, laid, strict=True):
            s = x[1]
            for i in range(a.batch):
                d.get(r[s[i]:s[i + 1]], -1)
        lines["slice"].append((time.perf_counter() - t) / n * 1e6)
    med = {k: statistics.median(v) for k, v in lines.items()}

    def ratio(x: str, y: str) -> float:
        return statistics.median(p / q for p, q in zip(lines[x], lines[y], strict=True))

    mib = 2**20
    print(f"{a.keys:,} Session-Id keys ({lens.mean():.1f} bytes on average)")
    print(f"  build: put_batch from empty {build_s:6.2f} s   dict comprehension {dict_build_s:6.2f} s")
    print(f"  memory: index arrays {ix.nbytes() / mib:7.1f} MiB (slots {ix.slots.nbytes / mib:.1f}, "
          f"arena {ix.arena.nbytes / mib:.1f}; {ix.capacity:,} slots, load {len(ix) / ix.capacity:.2f})"
          f"   dict + key objects {dict_bytes / mib:7.1f} MiB")
    print(f"lookups in batches of {a.batch}, {a.runs} runs x {n:,} keys (medians, µs per key):")
    print(f"  dict.get, key objects made (baseline)  {med['dict']:7.3f}")
    print(f"  dict.get of keys sliced from the batch {med['slice']:7.3f}")
    print(f"  lookup_batch, one Python call a batch  {med['call']:7.3f}   x{ratio('call', 'dict'):.2f} "
          f"of the baseline, x{ratio('call', 'slice'):.2f} of the sliced")
    print(f"  lookup_batch inside numba              {med['kernel']:7.3f}   x{ratio('kernel', 'dict'):.2f} "
          f"of the baseline, x{ratio('kernel', 'slice'):.2f} of the sliced")
    print(f"  KeyIndex.get per key (general path)    {med['get']:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
