"""Exported CDR files (CSV, JSON Lines, Parquet) read as numpy columns, for re-rating in bulk.

Never one CDR object per row: with pyarrow (installed here) CSV and JSON Lines go through its
multithreaded C++ readers and strings are dictionary-encoded to integer codes; without it the rows of
the one text reader (ocs.billing.cdr.files.rows) fill preallocated arrays. Amounts become exact
integer micro-units (a value with more than 6 decimals is an error, never rounded), times unix
seconds. Only the columns re-rating needs must be present (REQUIRED).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocs.billing.cdr.files import FormatError, files_in, format_of, rows
from ocs.billing.cdr.record import parse_amount, parse_iso

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


@dataclass(slots=True)
class Codes:
    """A string column as integer codes into `names`."""

    codes: np.ndarray[Any, np.dtype[np.int64]]
    names: list[str]


Ints = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(slots=True)
class CdrColumns:
    account: Codes
    plan: Codes
    unit: Codes
    currency: Codes
    rating_group: Ints            # int64
    used_units: Ints              # int64
    bundle_units: Ints            # int64 (zeros when the file has no such column)
    amount: Ints                  # int64 micro-units
    start_time: Ints              # int64 unix seconds

    def __len__(self) -> int:
        return len(self.used_units)


def read(path: str | os.PathLike[str], *, use_arrow: bool | None = None) -> CdrColumns:
    """All CDRs in a file or directory as one set of columns."""
    parts = list(iter_files(path, use_arrow=use_arrow))
    return parts[0] if len(parts) == 1 else concat(parts)


def iter_files(path: str | os.PathLike[str], *, use_arrow: bool | None = None) -> Iterator[CdrColumns]:
    arrow = pa is not None if use_arrow is None else (use_arrow and pa is not None)
    for f in files_in(path):
        kind = format_of(f)
        if kind == "parquet":
            if pa is None:
                raise FormatError(f"{f}: reading Parquet needs pyarrow (pip install pyarrow)")
            yield _from_arrow(f, _read_arrow(f, kind))
        elif arrow:
            yield _from_arrow(f, _read_arrow(f, kind))
        else:
            yield _read_plain(f, kind)


# ---------------------------------------------------------------- pyarrow path

def _read_arrow(f: Path, kind: str) -> Any:
    try:
        if kind == "csv":
            with f.open(encoding="utf-8") as fh:
                header = fh.readline().strip().split(",")
            have = [c for c in (*REQUIRED, *OPTIONAL_INT) if c in header]
            types = {c: pa.string() for c in STRINGS} | {"amount": pa.string(),
                                                         "start_time": pa.timestamp("s", tz="UTC")}
            return pa_csv.read_csv(f, convert_options=pa_csv.ConvertOptions(
                include_columns=have, column_types={k: v for k, v in types.items() if k in have}))
        if kind == "jsonl":
            return pa_json.read_json(f)
        return pa_parquet.read_table(f)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{f}: {str(exc).splitlines()[0]}") from None


def _codes(col: Any) -> Codes:
    enc = col.cast(pa.string()).dictionary_encode().combine_chunks()
    if enc.null_count:
        raise ValueError("empty value")
    return Codes(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                 enc.dictionary.to_pylist())


def _from_arrow(f: Path, table: Any) -> CdrColumns:
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise FormatError(f"{f}: missing column(s) {', '.join(missing)}")
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
        raise FormatError(f"{f}: {str(exc).splitlines()[0]}") from None


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


class _Builder:
    """Preallocated int64 columns, doubled when full."""

    NAMES = ("account", "plan", "unit", "currency", "rating_group", "used_units", "bundle_units",
             "amount", "start_time")

    def __init__(self) -> None:
        self.cap, self.n = 1 << 16, 0
        self.a = np.empty((len(self.NAMES), self.cap), dtype=np.int64)
        self.coders = [_Coder() for _ in STRINGS]
        self.times: dict[str, int] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        """row: one record of files.rows (text in CSV, JSON values in JSON Lines)."""
        if self.n == self.cap:
            self.cap *= 2
            bigger = np.empty((len(self.NAMES), self.cap), dtype=np.int64)
            bigger[:, :self.n] = self.a[:, :self.n]
            self.a = bigger
        col = self.a[:, self.n]
        for k, name in enumerate(STRINGS):
            v = row[name]
            if v in (None, ""):
                raise ValueError(f"empty {name}")
            col[k] = self.coders[k](str(v))
        col[4], col[5] = int(str(row["rating_group"])), int(str(row["used_units"]))
        bundle = row.get("bundle_units")
        col[6] = int(str(bundle)) if bundle not in (None, "") else 0
        col[7] = parse_amount(str(row["amount"]))
        start = row["start_time"]
        t = self.times.get(start)
        if t is None:
            t = self.times[start] = parse_iso(start)
        col[8] = t
        self.n += 1

    def done(self) -> CdrColumns:
        a = self.a[:, :self.n].copy()
        account, plan, unit, currency = (Codes(a[k], c.names()) for k, c in enumerate(self.coders))
        return CdrColumns(account, plan, unit, currency, a[4], a[5], a[6], a[7], a[8])


def _read_plain(f: Path, kind: str) -> CdrColumns:
    b = _Builder()
    for where, row in rows(f, kind, REQUIRED):
        try:
            b.add(row)
        except KeyError as exc:
            raise FormatError(f"{where}: missing column {exc.args[0]}") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise FormatError(f"{where}: {exc}") from None
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

    def ints(k: str) -> Ints:
        return np.concatenate([getattr(p, k) for p in parts])

    return CdrColumns(codes("account"), codes("plan"), codes("unit"), codes("currency"),
                      ints("rating_group"), ints("used_units"), ints("bundle_units"),
                      ints("amount"), ints("start_time"))
