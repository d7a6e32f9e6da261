"""CDR files: the row form of ocs.cdr.COLUMNS written as CSV, JSON Lines or Parquet, and read back.

Writers take the raw stored value lists (msgpack-decoded, COLUMNS order) so the export loop never
builds a CDR object per record; `file_values` must equal `ocs.cdr.to_row` (a test holds them equal).
CSV follows RFC 4180 (header line, CRLF, minimal quoting; an absent service_identifier is empty).
Parquet (pyarrow, optional) has a typed schema: int64 ids/units, decimal128(18,6) amount,
timestamp[s, UTC] times, so DuckDB and Spark read it without casts. Parquet itself has no seconds
unit: the file stores TIMESTAMP(MILLIS, adjusted to UTC) holding whole seconds, which is what
pyarrow, DuckDB and Spark read back as a UTC timestamp.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from balance.money import MoneyError, format_micro
from ocs.billing.cdr import CDR, COLUMNS

FORMATS = ("csv", "jsonl", "parquet")
SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
AMOUNT = COLUMNS.index("amount")
START = COLUMNS.index("start_time")
END = COLUMNS.index("end_time")
SERVICE = COLUMNS.index("service_identifier")
INT_COLUMNS = frozenset({"cdr_id", "rating_group", "used_units", "tariff_version", "bundle_units"})
_EPOCH = date(1970, 1, 1)


class FormatError(ValueError):
    """A CDR file that cannot be read, named with file and line."""


def format_of(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    for fmt, suf in SUFFIX.items():
        if suffix == suf:
            return fmt
    raise FormatError(f"{path}: unknown CDR file type (want .csv, .jsonl or .parquet)")


@lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).isoformat()


def iso(ts: int) -> str:
    """ocs.cdr.iso without a datetime per call (the day part is cached)."""
    days, secs = divmod(ts, 86400)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return f"{_day(days)}T{h:02d}:{m:02d}:{s:02d}Z"


@lru_cache(maxsize=4096)
def _days_of(day: str) -> int:
    return (date.fromisoformat(day) - _EPOCH).days


def parse_iso(text: str) -> int:
    """Unix seconds from 'YYYY-MM-DDTHH:MM:SSZ' (the form we write)."""
    if len(text) != 20 or text[10] != "T" or text[19] != "Z":
        raise ValueError(f"not an ISO 8601 UTC time: {text!r}")
    return _days_of(text[:10]) * 86400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])


def parse_amount(text: str) -> int:
    """Micro-units from a decimal string, exactly (fast path for the 6-decimal form we write)."""
    neg = text.startswith("-")
    whole, dot, frac = text[neg:].partition(".")
    if not whole.isdigit() or (dot and not frac.isdigit()) or len(frac) > 6:
        raise MoneyError(f"not a 6-decimal amount: {text!r}")
    value = int(whole) * 1_000_000 + (int(frac.ljust(6, "0")) if frac else 0)
    return -value if neg else value


def file_values(vals: list[Any]) -> list[Any]:
    """Stored values -> file values (amount as decimal string, times ISO 8601 UTC), in place."""
    vals[AMOUNT] = format_micro(vals[AMOUNT])
    vals[START] = iso(vals[START])
    vals[END] = iso(vals[END])
    return vals


# --- writers: one object per open file; write(list of stored value lists); finish() flushes;
# abort() lets go after a failed write (the caller deletes the file, so nothing more need land) ---

class CsvWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.buf = io.StringIO()
        self.w = csv.writer(self.buf, lineterminator="\r\n")
        self.w.writerow(COLUMNS)
        self._drain()

    def _drain(self) -> None:
        self.f.write(self.buf.getvalue().encode())
        self.buf.seek(0)
        self.buf.truncate()

    def write(self, rows: list[list[Any]]) -> None:
        self.w.writerows(file_values(r) for r in rows)
        self._drain()

    def finish(self) -> None:
        self.f.flush()

    def abort(self) -> None:
        self.buf.seek(0)
        self.buf.truncate()


class JsonlWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def write(self, rows: list[list[Any]]) -> None:
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        cols = COLUMNS
        self.f.write("".join(dumps(dict(zip(cols, file_values(r), strict=True))) + "\n"
                             for r in rows).encode())

    def finish(self) -> None:
        self.f.flush()

    def abort(self) -> None:
        pass


def parquet_schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa
    types = {"cdr_id": pa.int64(), "rating_group": pa.int64(), "service_identifier": pa.int64(),
             "used_units": pa.int64(), "amount": pa.decimal128(18, 6), "tariff_version": pa.int64(),
             "start_time": pa.timestamp("s", tz="UTC"), "end_time": pa.timestamp("s", tz="UTC"),
             "bundle_units": pa.int64()}
    return pa.schema([pa.field(c, types.get(c, pa.string()), nullable=(c == "service_identifier"))
                      for c in COLUMNS])


def _decimal_array(micros: list[int]):  # type: ignore[no-untyped-def]
    """decimal128(18,6) straight from micro-units: the unscaled value IS the micro amount."""
    import numpy as np
    import pyarrow as pa
    lo = np.asarray(micros, dtype=np.int64)
    if lo.size and int(np.abs(lo).max()) >= 10**18:
        raise MoneyError("amount does not fit decimal128(18,6)")
    words = np.empty((lo.size, 2), dtype=np.int64)
    words[:, 0] = lo
    words[:, 1] = np.where(lo < 0, -1, 0)          # two's complement sign extension, little endian
    return pa.Array.from_buffers(pa.decimal128(18, 6), lo.size, [None, pa.py_buffer(words.tobytes())])


def parquet_table(rows: list[list[Any]]):  # type: ignore[no-untyped-def]
    import pyarrow as pa
    schema = parquet_schema()
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS]
    arrays = []
    for name, field, col in zip(COLUMNS, schema, cols, strict=True):
        if name == "amount":
            arrays.append(_decimal_array(list(col)))
        else:
            arrays.append(pa.array(col, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class ParquetWriter:
    def __init__(self, f: BinaryIO) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise FormatError("the parquet format needs pyarrow (pip install pyarrow)") from None
        self.f = f
        self.w = pq.ParquetWriter(f, parquet_schema(), compression="zstd", coerce_timestamps="ms")

    def write(self, rows: list[list[Any]]) -> None:
        if rows:
            self.w.write_table(parquet_table(rows))

    def finish(self) -> None:
        self.w.close()
        self.f.flush()

    def abort(self) -> None:
        """Close the pyarrow writer now (its footer may fail to land: fine, the file is junk), or
        it would try at garbage collection, into a closed file, with a traceback on stderr."""
        with contextlib.suppress(Exception):
            self.w.close()


class RowWriter(Protocol):
    """What every format's writer offers: write batches of rows, then finish (or abort)."""

    def write(self, rows: list[list[Any]]) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


WRITERS: dict[str, Callable[[BinaryIO], RowWriter]] = {
    "csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}


def check_format(fmt: str) -> None:
    if fmt not in WRITERS:
        raise FormatError(f"unknown format {fmt!r} (csv, jsonl or parquet)")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise FormatError("the parquet format needs pyarrow (pip install pyarrow)") from None


# --- readers: any of our files back to CDR records ---

def _from_text(row: dict[str, Any], where: str) -> CDR:
    try:
        vals = []
        for c in COLUMNS:
            v = row[c]
            if c in INT_COLUMNS:
                v = int(v)
            elif c == "service_identifier":
                v = None if v in ("", None) else int(v)
            elif c == "amount":
                v = parse_amount(str(v))
            elif c in ("start_time", "end_time"):
                v = parse_iso(v)
            vals.append(v)
    except KeyError as exc:
        raise FormatError(f"{where}: missing column {exc.args[0]}") from None
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{where}: {exc}") from None
    return CDR(*vals)


def _read_csv(path: Path) -> Iterator[CDR]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise FormatError(f"{path}:1: empty file (no header)")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise FormatError(f"{path}:1: header lacks {', '.join(missing)}")
        idx = [header.index(c) for c in COLUMNS]
        for n, rec in enumerate(reader, start=2):
            if len(rec) != len(header):
                raise FormatError(f"{path}:{n}: {len(rec)} fields, header has {len(header)}")
            yield _from_text(dict(zip(COLUMNS, (rec[i] for i in idx), strict=True)), f"{path}:{n}")


def _read_jsonl(path: Path) -> Iterator[CDR]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}:{n}: {exc.msg}") from None
            yield _from_text(row, f"{path}:{n}")


def _read_parquet(path: Path) -> Iterator[CDR]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FormatError(f"{path}: reading parquet needs pyarrow") from None
    pf = pq.ParquetFile(path)
    scale = Decimal(1_000_000)
    for batch in pf.iter_batches(batch_size=65536, columns=list(COLUMNS)):
        cols = [batch.column(c).to_pylist() for c in COLUMNS]
        for row in zip(*cols, strict=True):
            vals = list(row)
            vals[AMOUNT] = int(vals[AMOUNT] * scale)
            vals[START] = int(vals[START].timestamp())
            vals[END] = int(vals[END].timestamp())
            yield CDR(*vals)


def read_file(path: str | os.PathLike) -> Iterator[CDR]:
    p = Path(path)
    fmt = format_of(p)
    return {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt](p)


def cdr_files(root: str | os.PathLike) -> list[Path]:
    """Complete CDR files under a file or directory (hidden temp files skipped), sorted by name."""
    p = Path(root)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FormatError(f"{root}: no such file or directory")
    return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                  and f.suffix.lower() in SUFFIX.values())


def read_all(root: str | os.PathLike) -> Iterator[tuple[Path, CDR]]:
    for f in cdr_files(root):
        for cdr in read_file(f):
            yield f, cdr


def write_rows(f: BinaryIO, fmt: str, rows: Iterable[list[Any]], chunk: int = 4096) -> int:
    """Write all stored value lists to an open binary file; returns the count."""
    w = WRITERS[fmt](f)
    n = 0
    buf: list[list[Any]] = []
    try:
        for r in rows:
            buf.append(r)
            if len(buf) >= chunk:
                w.write(buf)
                n += len(buf)
                buf = []
        w.write(buf)
        n += len(buf)
        w.finish()
    except BaseException:
        w.abort()
        raise
    return n


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
