"""Read a table — .jsonl, .csv, .tsv or .parquet — one row at a time.

hm3's one table reader: texts for alignment and RegMean, and the datasets of an evaluation
suite, are all read here. :func:`table_format` checks that a file exists and has a supported
type; :func:`peek_columns` reads only the header, the schema or the first record;
:func:`iter_records` streams ``(row, record)`` pairs (a .jsonl or .csv/.tsv line by line, a
.parquet record batch by record batch), so memory does not grow with the file;
:func:`read_columns` collects some columns of a whole file. Row numbers count data rows from 0.
Every error is an :class:`~hm3.errors.Hm3Error` that names the file as the caller describes it
(``where``) and, for a malformed line, its line number (1 is a .csv's header). Blank .jsonl lines
are skipped; a .csv/.tsv row with more fields than the header is an error (an unquoted separator
inside a value), one with fewer gives ``None`` for the missing ones.

It knows nothing of what the columns mean: checking texts and labels is the caller's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error

FORMATS = (".jsonl", ".csv", ".tsv", ".parquet")
_PARQUET_ROWS = 1024  # rows per parquet record batch read
_READ_ERRORS = (OSError, UnicodeDecodeError, csv.Error, ValueError)  # pyarrow's are ValueErrors


def table_format(path: Path, where: str, fix: str = "check the path") -> str:
    """The file's suffix (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``), once it is checked.

    Raises:
        Hm3Error: the file is missing (``fix`` says what to do) or of another type.
    """
    if not path.is_file():
        raise Hm3Error(f"{where}: file not found; {fix}")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise Hm3Error(f"{where}: file type {suffix!r} not supported; use {', '.join(FORMATS)}")
    return suffix


def peek_columns(path: Path, where: str) -> tuple[list[str], int | None]:
    """Column names and row count, reading as little as possible.

    The names are a .csv/.tsv header, a .parquet schema or the first .jsonl record's keys. The
    count is known up front for .parquet only (its footer); it is ``0`` for an empty file and
    ``None`` when unknown.
    """
    suffix = table_format(path, where)
    with _errors_named(where):
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return list(meta.schema_arrow.names), meta.metadata.num_rows
        if suffix in (".csv", ".tsv"):
            records = _delimited(path, where, suffix)
            first = next(records, None)
            records.close()
            return _delimited_header(path, suffix), None if first is not None else 0
        for _, record in jsonl_records(path, where):
            return list(record), None
        return [], 0


def iter_records(
    path: Path, where: str, columns: Sequence[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row, record)`` for every row of a table, streamed, rows counted from 0.

    Args:
        path: a .jsonl, .csv, .tsv or .parquet file.
        where: how errors name the file (``"--texts data.csv"``).
        columns: for .parquet, the columns to read (all when ``None``; each must exist). The
            text formats give every column of the row (a .jsonl record as written).

    Raises:
        Hm3Error: a missing or unsupported file, or a malformed line (named by its number).
    """
    suffix = table_format(path, where)
    with _errors_named(where):
        if suffix == ".parquet":
            yield from _parquet(path, columns)
        elif suffix in (".csv", ".tsv"):
            yield from _delimited(path, where, suffix)
        else:
            yield from jsonl_records(path, where)


def read_columns(
    path: Path, where: str, needed: Sequence[str]
) -> tuple[list[str], dict[str, list[Any]], int]:
    """The ``needed`` columns of a whole table, as lists of row values.

    Returns:
        ``(names, columns, rows)``: the file's column names (for .jsonl, every key of every
        record, in order of appearance), the needed columns that exist, and the row count.
    """
    suffix = table_format(path, where)
    if suffix == ".parquet":
        names, count = peek_columns(path, where)
        present = [c for c in dict.fromkeys(needed) if c in names]
        columns: dict[str, list[Any]] = {c: [] for c in present}
        for _, record in iter_records(path, where, present) if present else ():
            for c in present:
                columns[c].append(record[c])
        return names, columns, count or 0
    seen: dict[str, None] = {}
    values: dict[str, list[Any]] = {c: [] for c in dict.fromkeys(needed)}
    rows = 0
    for _, record in iter_records(path, where):
        seen.update(dict.fromkeys(record))
        for c, column in values.items():
            column.append(record.get(c))
        rows += 1
    names = list(seen) if suffix == ".jsonl" else _delimited_header(path, suffix)
    return names, {c: v for c, v in values.items() if c in names}, rows


def jsonl_records(path: Path, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row, record)`` for each non-blank line of a JSON-lines file, streamed.

    Raises:
        Hm3Error: a line that is not JSON, not a JSON object or not UTF-8, named by its number.
    """
    with path.open("rb") as f:
        row = 0
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                raise Hm3Error(f"{where}: line {lineno} is not UTF-8 text; save the file as "
                               "UTF-8") from None  # fmt: skip
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise Hm3Error(f"{where}: line {lineno} is not valid JSON ({exc.msg}); fix that "
                               "line (one JSON object per line)") from None  # fmt: skip
            if not isinstance(record, dict):
                raise Hm3Error(
                    f"{where}: line {lineno} is not a JSON object; write one object per line"
                )
            yield row, record
            row += 1


def _delimited(path: Path, where: str, suffix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a .csv (comma) or .tsv (tab) file with a header line, as header → value."""
    delimiter = "\t" if suffix == ".tsv" else ","
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        row = 0
        while True:
            start = reader.line_num + 1  # the line where the next record begins
            try:
                fields = next(reader, None)
            except csv.Error as exc:
                raise Hm3Error(f"{where}: line {start} is not valid {suffix[1:]} ({exc}); fix "
                               "that line") from None  # fmt: skip
            if fields is None:
                return
            if header is None:
                header = fields
                continue
            if not fields:  # a blank line
                continue
            if len(fields) > len(header):
                raise Hm3Error(
                    f"{where}: line {reader.line_num} has {len(fields)} fields, the header "
                    f"{len(header)}; quote values that contain {delimiter!r}"
                )
            missing = [None] * (len(header) - len(fields))
            yield row, dict(zip(header, [*fields, *missing], strict=True))
            row += 1


def _delimited_header(path: Path, suffix: str) -> list[str]:
    delimiter = "\t" if suffix == ".tsv" else ","
    with path.open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def _parquet(path: Path, columns: Sequence[str] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    row = 0
    wanted = list(columns) if columns is not None else None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_ROWS, columns=wanted):
        yield from _batch_rows(batch, row)  # its lists are freed before the next batch is read
        row += batch.num_rows


def _batch_rows(batch: Any, first: int) -> Iterator[tuple[int, dict[str, Any]]]:
    names = batch.schema.names
    columns = [column.to_pylist() for column in batch.columns]
    for row, values in enumerate(zip(*columns, strict=True), first):
        yield row, dict(zip(names, values, strict=True))


@contextmanager
def _errors_named(where: str) -> Iterator[None]:
    """Turn a read error that is not an Hm3Error into one that names the file."""
    try:
        yield
    except Hm3Error:
        raise
    except UnicodeDecodeError as exc:  # a .csv/.tsv saved in another encoding
        raise Hm3Error(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the "
                       "file as UTF-8") from None  # fmt: skip
    except _READ_ERRORS as exc:
        raise Hm3Error(f"{where}: cannot read the file ({exc}); check its format") from None
