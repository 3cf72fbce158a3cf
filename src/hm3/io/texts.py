"""Unlabeled texts for head alignment, streamed from a .jsonl, .csv or .parquet file.

:func:`open_texts` checks a file once, cheaply (it exists, has a supported type, has rows and
the text column), reading only the header, schema or first record. :func:`iter_text_batches`
then yields lists of at most ``batch_size`` texts: the file is never loaded whole (a .jsonl or
.csv is read line by line, a .parquet record batch by record batch), so memory does not grow
with the file. Rows whose text is missing or blank are skipped and counted; a text that is not
a string (a number, a list) is an error, because it means the wrong column. :func:`sha256_file`
hashes a file in chunks, to record which texts a model was aligned on.

This module runs no model.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error
from hm3.io.tables import jsonl_records

FORMATS = (".jsonl", ".csv", ".parquet")
_PARQUET_ROWS = 1024  # rows per parquet record batch read


@dataclass(frozen=True)
class TextFile:
    """A checked text file. ``rows`` is known up front only for parquet (from its footer)."""

    path: Path
    column: str
    rows: int | None = None
    where: str = ""
    column_option: str = "--text-column"


@dataclass
class TextCount:
    """Filled in while streaming: texts yielded and blank rows skipped."""

    texts: int = 0
    skipped: int = 0
    first_skipped: list[int] = field(default_factory=list)


def open_texts(
    path: str | Path,
    column: str = "text",
    *,
    options: tuple[str, str] = ("--texts", "--text-column"),
) -> TextFile:
    """Check a text file without reading it whole.

    Args:
        path: a ``.jsonl``, ``.csv`` or ``.parquet`` file.
        column: the column (or JSON key) that holds the texts.
        options: how the user gave the file and the column, for error messages (the CLI's
            options by default; a merge YAML's ``align.texts`` / ``align.text_column``).

    Returns:
        A :class:`TextFile` for :func:`iter_text_batches`.

    Raises:
        Hm3Error: missing file, unsupported type, no rows, or no such column.
    """
    path = Path(path)
    where = f"{options[0]} {path}"
    if not path.is_file():
        raise Hm3Error(f"{where}: file not found; give a .jsonl, .csv or .parquet file of texts")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise Hm3Error(f"{where}: file type {suffix!r} not supported; use {', '.join(FORMATS)}")
    try:
        names, rows = _peek(path, suffix, where)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        if isinstance(exc, Hm3Error):
            raise
        raise Hm3Error(f"{where}: cannot read the file ({exc}); check its format") from None
    if rows == 0:
        raise Hm3Error(f"{where}: the file has no rows; give a file with unlabeled texts")
    if column not in names:
        shown = ", ".join(map(str, names)) or "none"
        raise Hm3Error(
            f"{where}: no column {column!r}; columns in the file: {shown}; set {options[1]} "
            "to one of them"
        )
    return TextFile(path, column, rows if suffix == ".parquet" else None, where, options[1])


def _peek(path: Path, suffix: str, where: str) -> tuple[list[Any], int | None]:
    """Column names and (for parquet) the row count; ``0`` rows when the file is empty."""
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path)
        return list(meta.schema_arrow.names), meta.metadata.num_rows
    if suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or next(reader, None) is None:
                return header or [], 0
            return header, None
    for _, record in jsonl_records(path, where):
        return list(record), None
    return [], 0


def expected_texts(texts: TextFile, max_texts: int | None = None) -> int | None:
    """How many texts a pass will yield at most, when known up front (for a progress bar)."""
    known = [n for n in (texts.rows, max_texts) if n is not None]
    return min(known) if known else None


def iter_text_batches(
    texts: TextFile, batch_size: int, max_texts: int | None = None, count: TextCount | None = None
) -> Iterator[list[str]]:
    """Yield the texts of ``texts`` in file order, ``batch_size`` at a time.

    Args:
        texts: a file checked by :func:`open_texts`.
        batch_size: at most this many texts per list.
        max_texts: stop after this many texts (the first ones in the file).
        count: updated with the texts yielded and the blank rows skipped.

    Raises:
        Hm3Error: a row whose text is not a string, or a malformed line.
    """
    count = count if count is not None else TextCount()
    batch: list[str] = []
    for row, value in _values(texts):
        if max_texts is not None and count.texts >= max_texts:
            break
        if value is None or (isinstance(value, str) and not value.strip()):
            count.skipped += 1
            if len(count.first_skipped) < 3:
                count.first_skipped.append(row)
            continue
        if not isinstance(value, str):
            raise Hm3Error(
                f"{texts.where}: row {row} of column {texts.column!r} is not text (got "
                f"{type(value).__name__} {value!r:.40}); set {texts.column_option} to the text "
                "column"
            )
        batch.append(value)
        count.texts += 1
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _values(texts: TextFile) -> Iterator[tuple[int, Any]]:
    """(row number, value of the text column), one row at a time; row numbers start at 0."""
    suffix = texts.path.suffix.lower()
    try:
        if suffix == ".parquet":
            yield from _parquet_values(texts.path, texts.column)
        elif suffix == ".csv":
            with texts.path.open(encoding="utf-8-sig", newline="") as f:
                for row, record in enumerate(csv.DictReader(f)):
                    yield row, record.get(texts.column)
        else:
            for row, record in jsonl_records(texts.path, texts.where):
                yield row, record.get(texts.column)
    except Hm3Error:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:  # pyarrow's are ValueErrors
        raise Hm3Error(f"{texts.where}: cannot read the file ({exc}); check its format") from None


def _parquet_values(path: Path, column: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    row = 0
    batches = pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_ROWS, columns=[column])
    for record_batch in batches:
        for value in record_batch.column(0).to_pylist():
            yield row, value
            row += 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
