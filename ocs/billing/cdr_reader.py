"""Exported CDR files (CSV, JSON Lines, Parquet) read as numpy columns, for re-rating in bulk.

Never one dict per row on the fast path: with pyarrow (installed here) CSV and JSON Lines go through
its multithreaded C++ readers and strings are dictionary-encoded to integer codes; without it the csv
module fills preallocated arrays. Amounts become exact integer micro-units (a value with more than 6
decimals is an error, never rounded), times unix seconds.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from balance.money import MoneyError, to_micro

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pa_parquet
except ImportError:  # pragma: no cover - exercised by forcing use_arrow=False
    pa = None

REQUIRED = ("account_id", "plan", "rating_group", "unit", "used_units", "amount", "currency",
            "start_time")
OPTIONAL_INT = ("bundle_units",)
STRINGS = ("account_id", "plan", "unit", "currency")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".parquet": "parquet"}


class CdrError(ValueError):
    """A CDR file that cannot be read, named with file (and line when known)."""


@dataclass(slots=True)
class Codes:
    """A string column as integer codes into `names`."""

    codes: np.ndarray
    names: list[str]


@dataclass(slots=True)
class CdrColumns:
    account: Codes
    plan: Codes
    unit: Codes
    currency: Codes
    rating_group: np.ndarray      # int64
    used_units: np.ndarray        # int64
    bundle_units: np.ndarray      # int64 (zeros when the file has no such column)
    amount: np.ndarray            # int64 micro-units
    start_time: np.ndarray        # int64 unix seconds

    def __len__(self) -> int:
        return len(self.used_units)


def files_in(path: str | os.PathLike) -> list[Path]:
    """The CDR files at a path: the file itself, or every CDR file in a directory (sorted)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
        if not found:
            raise CdrError(f"{p}: no CDR files (.csv, .jsonl, .parquet) in this directory")
        return found
    if not p.exists():
        raise CdrError(f"{p}: no such file or directory")
    if p.suffix.lower() not in SUFFIXES:
        raise CdrError(f"{p}: unknown CDR file type (want .csv, .jsonl or .parquet)")
    return [p]


def read(path: str | os.PathLike, *, use_arrow: bool | None = None) -> CdrColumns:
    """All CDRs in a file or directory as one set of columns."""
    parts = list(iter_files(path, use_arrow=use_arrow))
    return parts[0] if len(parts) == 1 else concat(parts)


def iter_files(path: str | os.PathLike, *, use_arrow: bool | None = None) -> Iterator[CdrColumns]:
    arrow = pa is not None if use_arrow is None else (use_arrow and pa is not None)
    for f in files_in(path):
        kind = SUFFIXES[f.suffix.lower()]
        if kind == "parquet":
            if pa is None:
                raise CdrError(f"{f}: reading Parquet needs pyarrow (pip install pyarrow)")
            yield _from_arrow(f, _read_arrow(f, kind))
        elif arrow:
            yield _from_arrow(f, _read_arrow(f, kind))
        elif kind == "csv":
            yield _read_csv_plain(f)
        else:
            yield _read_jsonl_plain(f)


# ---------------------------------------------------------------- pyarrow path

def _read_arrow(f: Path, kind: str) -> Any:
    try:
        if kind == "csv":
            header = f.open(encoding="utf-8").readline().strip().split(",")
            have = [c for c in (*REQUIRED, *OPTIONAL_INT) if c in header]
            types = {c: pa.string() for c in STRINGS} | {"amount": pa.string(),
                                                         "start_time": pa.timestamp("s", tz="UTC")}
            return pa_csv.read_csv(f, convert_options=pa_csv.ConvertOptions(
                include_columns=have, column_types={k: v for k, v in types.items() if k in have}))
        if kind == "jsonl":
            return pa_json.read_json(f)
        return pa_parquet.read_table(f)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        raise CdrError(f"{f}: {str(exc).splitlines()[0]}") from None


def _codes(col: Any) -> Codes:
    enc = col.cast(pa.string()).dictionary_encode().combine_chunks()
    if enc.null_count:
        raise ValueError("empty value")
    return Codes(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                 enc.dictionary.to_pylist())


def _from_arrow(f: Path, table: Any) -> CdrColumns:
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise CdrError(f"{f}: missing column(s) {', '.join(missing)}")
    try:
        amount = table["amount"]
        if not pa.types.is_decimal(amount.type):
            amount = pc.cast(amount.cast(pa.string()), pa.decimal128(24, 6))
        micro = pc.multiply(pc.cast(amount, pa.decimal128(24, 6)),
                            pa.scalar(1_000_000, pa.decimal128(7, 0)))
        start = table["start_time"]
        if pa.types.is_string(start.type) or pa.types.is_large_string(start.type):
            start = pc.cast(start, pa.timestamp("s", tz="UTC"))
        start = start.cast(pa.timestamp("s", tz="UTC")).cast(pa.int64())
        n = table.num_rows
        bundle = (table["bundle_units"].cast(pa.int64()).fill_null(0).to_numpy()
                  if "bundle_units" in table.column_names else np.zeros(n, dtype=np.int64))
        cols = [table[c].cast(pa.int64()) for c in ("rating_group", "used_units")]
        if any(c.null_count for c in [*cols, start, micro]):
            raise ValueError("an empty rating_group, used_units, amount or start_time")
        return CdrColumns(
            account=_codes(table["account_id"]), plan=_codes(table["plan"]),
            unit=_codes(table["unit"]), currency=_codes(table["currency"]),
            rating_group=cols[0].to_numpy(), used_units=cols[1].to_numpy(),
            bundle_units=np.asarray(bundle, dtype=np.int64),
            amount=pc.cast(micro, pa.int64()).to_numpy(), start_time=start.to_numpy())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as exc:
        raise CdrError(f"{f}: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------- plain Python path

class _Coder:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        code = self.index.get(s)
        if code is None:
            code = self.index[s] = len(self.index)
        return code

    def names(self) -> list[str]:
        return list(self.index)


def _parse_time(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return int(dt.timestamp())


class _Builder:
    """Preallocated int64 columns, doubled when full."""

    NAMES = ("account", "plan", "unit", "currency", "rating_group", "used_units", "bundle_units",
             "amount", "start_time")

    def __init__(self) -> None:
        self.cap, self.n = 1 << 16, 0
        self.a = np.empty((len(self.NAMES), self.cap), dtype=np.int64)
        self.coders = [_Coder() for _ in STRINGS]
        self.times: dict[str, int] = {}

    def add(self, row: Any) -> None:
        """row: (account, plan, unit, currency, rating_group, used, bundle, amount, start) as text."""
        if self.n == self.cap:
            self.cap *= 2
            bigger = np.empty((len(self.NAMES), self.cap), dtype=np.int64)
            bigger[:, :self.n] = self.a[:, :self.n]
            self.a = bigger
        col = self.a[:, self.n]
        for k in range(4):
            if not row[k]:
                raise ValueError(f"empty {STRINGS[k]}")
            col[k] = self.coders[k](row[k])
        col[4], col[5] = int(row[4]), int(row[5])
        col[6] = int(row[6]) if row[6] not in (None, "") else 0
        col[7] = to_micro(row[7])
        t = self.times.get(row[8])
        if t is None:
            t = self.times[row[8]] = _parse_time(row[8])
        col[8] = t
        self.n += 1

    def done(self) -> CdrColumns:
        a = self.a[:, :self.n].copy()
        account, plan, unit, currency = (Codes(a[k], c.names()) for k, c in enumerate(self.coders))
        return CdrColumns(account, plan, unit, currency, a[4], a[5], a[6], a[7], a[8])


def _read_csv_plain(f: Path) -> CdrColumns:
    b = _Builder()
    try:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None) or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise CdrError(f"{f}:1: missing column(s) {', '.join(missing)}")
            idx = [header.index(c) for c in REQUIRED]
            order = [idx[0], idx[1], idx[3], idx[6], idx[2], idx[4]]
            bundle = header.index("bundle_units") if "bundle_units" in header else None
            amount, start = idx[5], idx[7]
            for line, row in enumerate(reader, 2):
                try:
                    b.add([row[i] for i in order] + [row[bundle] if bundle is not None else "",
                                                     row[amount], row[start]])
                except (ValueError, IndexError, MoneyError) as exc:
                    raise CdrError(f"{f}:{line}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CdrError(f"{f}: {exc}") from None
    return b.done()


def _read_jsonl_plain(f: Path) -> CdrColumns:
    b = _Builder()
    keys = ("account_id", "plan", "unit", "currency", "rating_group", "used_units")
    try:
        with f.open(encoding="utf-8") as fh:
            for line, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    r = json.loads(text)
                    b.add([str(r[k]) for k in keys] + [r.get("bundle_units"), str(r["amount"]),
                                                       r["start_time"]])
                except (ValueError, KeyError, TypeError, MoneyError) as exc:
                    raise CdrError(f"{f}:{line}: {exc!s}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CdrError(f"{f}: {exc}") from None
    return b.done()


# ---------------------------------------------------------------- combining files

def _merge(parts: list[Codes]) -> Codes:
    names: dict[str, int] = {}
    out = []
    for p in parts:
        remap = np.array([names.setdefault(n, len(names)) for n in p.names] or [0], dtype=np.int64)
        out.append(remap[p.codes])
    return Codes(np.concatenate(out), list(names))


def concat(parts: list[CdrColumns]) -> CdrColumns:
    def codes(k: str) -> Codes:
        return _merge([getattr(p, k) for p in parts])

    def ints(k: str) -> np.ndarray:
        return np.concatenate([getattr(p, k) for p in parts])

    return CdrColumns(codes("account"), codes("plan"), codes("unit"), codes("currency"),
                      ints("rating_group"), ints("used_units"), ints("bundle_units"),
                      ints("amount"), ints("start_time"))
