"""CDR files: the row form of COLUMNS written as CSV, JSON Lines or Parquet, and the one reader of them.

Writers take the stored value lists (ocs.billing.cdr.layout.values, COLUMNS order) so the export loop
never builds a CDR object per record; their values are record.file_values, which to_row is too.
CSV follows RFC 4180 (header line, CRLF, minimal quoting; an absent service_identifier is empty).
Parquet (pyarrow, optional) has a typed schema: int64 ids/units, decimal128(18,6) amount,
timestamp[s, UTC] times, so DuckDB and Spark read it without casts. Parquet itself has no seconds
unit: the file stores TIMESTAMP(MILLIS, adjusted to UTC) holding whole seconds, which is what
pyarrow, DuckDB and Spark read back as a UTC timestamp.

Reading: `rows` is the one parser of the text formats (a row per line, named file:line in errors);
`read_file` turns its rows into CDR records, ocs.billing.cdr.columns into numpy columns. Parquet is
read through pyarrow either way.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from balance.money import MoneyError
from ocs.billing.cdr.record import (
    AMOUNT,
    CDR,
    COLUMNS,
    END,
    INT_COLUMNS,
    START,
    file_values,
    parse_amount,
    parse_iso,
)

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("csv", "jsonl", "parquet")
SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
# what a file is read as: the suffixes we write, and the other names JSON Lines goes by
READ_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
                 ".parquet": "parquet"}


class FormatError(ValueError):
    """A CDR file that cannot be read, named with file (and line when known)."""


def format_of(path: str | os.PathLike[str]) -> str:
    fmt = READ_SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise FormatError(f"{path}: unknown CDR file type (want .csv, .jsonl or .parquet)")
    return fmt


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


def parquet_schema() -> pa.Schema:
    import pyarrow as pa
    types = {"cdr_id": pa.int64(), "rating_group": pa.int64(), "service_identifier": pa.int64(),
             "used_units": pa.int64(), "amount": pa.decimal128(18, 6), "tariff_version": pa.int64(),
             "start_time": pa.timestamp("s", tz="UTC"), "end_time": pa.timestamp("s", tz="UTC"),
             "bundle_units": pa.int64()}
    return pa.schema([pa.field(c, types.get(c, pa.string()), nullable=(c == "service_identifier"))
                      for c in COLUMNS])


def _decimal_array(micros: list[int]) -> pa.Array:
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


def parquet_table(rows: list[list[Any]]) -> pa.Table:
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


# --- which files: the export's under a directory, or the ones a rerate is pointed at ---

def cdr_files(root: str | os.PathLike[str]) -> list[Path]:
    """Complete CDR files under a file or directory (hidden temp files skipped), sorted by name."""
    p = Path(root)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FormatError(f"{root}: no such file or directory")
    return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                  and f.suffix.lower() in SUFFIX.values())


def files_in(path: str | os.PathLike[str]) -> list[Path]:
    """The CDR files at a path as `ocs rerate` takes them: the file itself, or every CDR file
    directly in a directory (sorted, any READ_SUFFIXES name); none is an error."""
    p = Path(path)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in READ_SUFFIXES)
        if not found:
            raise FormatError(f"{p}: no CDR files (.csv, .jsonl, .parquet) in this directory")
        return found
    if not p.exists():
        raise FormatError(f"{p}: no such file or directory")
    format_of(p)
    return [p]


# --- the reader ---

def _csv_rows(path: Path, need: Sequence[str]) -> Iterator[tuple[str, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise FormatError(f"{path}:1: empty file (no header)")
        missing = [c for c in need if c not in header]
        if missing:
            raise FormatError(f"{path}:1: header lacks {', '.join(missing)}")
        for n, rec in enumerate(reader, start=2):
            if len(rec) != len(header):
                raise FormatError(f"{path}:{n}: {len(rec)} fields, header has {len(header)}")
            yield f"{path}:{n}", dict(zip(header, rec, strict=True))


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}:{n}: {exc.msg}") from None
            if not isinstance(row, dict):
                raise FormatError(f"{path}:{n}: not a JSON object")
            yield f"{path}:{n}", row


def rows(path: Path, fmt: str, need: Sequence[str] = COLUMNS) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, row) per record of a CSV or JSON Lines file, where = "file:line" and row maps each
    column to its value as written (text in CSV, JSON values in JSON Lines). A CSV header without
    every `need` column is an error; a JSON object without one is the caller's to name."""
    try:
        if fmt == "csv":
            yield from _csv_rows(path, need)
        elif fmt == "jsonl":
            yield from _jsonl_rows(path)
        else:
            raise FormatError(f"{path}: {fmt} is not a text format")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: {exc}") from None


def _record(row: Mapping[str, Any], where: str) -> CDR:
    try:
        vals: list[Any] = []
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


def parquet_batches(path: Path, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise FormatError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=65536, columns=list(columns))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise FormatError(f"{path}: {str(exc).splitlines()[0]}") from None


def _read_parquet(path: Path) -> Iterator[CDR]:
    scale = Decimal(1_000_000)
    for batch in parquet_batches(path, COLUMNS):
        cols = [batch.column(c).to_pylist() for c in COLUMNS]
        for row in zip(*cols, strict=True):
            vals = list(row)
            vals[AMOUNT] = int(vals[AMOUNT] * scale)
            vals[START] = int(vals[START].timestamp())
            vals[END] = int(vals[END].timestamp())
            yield CDR(*vals)


def read_file(path: str | os.PathLike[str]) -> Iterator[CDR]:
    """The CDRs of one file, in file order."""
    p = Path(path)
    fmt = format_of(p)
    if fmt == "parquet":
        return _read_parquet(p)
    return (_record(row, where) for where, row in rows(p, fmt))


def read_all(root: str | os.PathLike[str]) -> Iterator[tuple[Path, CDR]]:
    for f in cdr_files(root):
        for cdr in read_file(f):
            yield f, cdr
