"""Unlabeled texts for head alignment and RegMean, streamed from a table file.

:func:`open_texts` checks a file once, cheaply (it exists, has a supported type, has rows and
the text column), reading only the header, schema or first record. :func:`iter_text_batches`
then yields lists of at most ``batch_size`` texts: the file is never loaded whole (rows come
from :func:`hm3.io.tables.iter_records`), so memory does not grow with the file. Rows whose
text is missing or blank are skipped and counted; a text that is not a string (a number, a
list) is an error, because it means the wrong column. :func:`sha256_file` hashes a file in
chunks, to record which texts a model was aligned on.

Reading the formats is :mod:`hm3.io.tables`'; this module adds what is specific to texts. It
runs no model.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error, spell
from hm3.io.tables import FORMATS, iter_records, peek_columns, table_format


def is_blank(text: str) -> bool:
    """Whether ``text`` has nothing a tokenizer reads: only white space, control and format
    characters (zero-width spaces, byte order marks, NUL), which BERT-style tokenizers drop, so
    the model would score it as the empty string. Stops at the first visible character."""
    if not text.strip():
        return True
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def lone_surrogate(text: str) -> int | None:
    """The position of ``text``'s first lone surrogate (a ``\\ud800`` JSON escape without its
    pair, or a byte that was not UTF-8 on the command line), which no tokenizer can read; else
    ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


NOT_UNICODE = (
    "not valid Unicode text (a lone surrogate at character {at}: bytes that are not UTF-8, or "
    "half of a \\ud800-style escape)"
)


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
    options: tuple[str, str] | None = None,
    where: str | None = None,
) -> TextFile:
    """Check a text file without reading it whole.

    Args:
        path: a ``.jsonl``, ``.csv``, ``.tsv`` or ``.parquet`` file.
        column: the column (or JSON key) that holds the texts.
        options: how the user gave the file and the column, for error messages (a merge
            YAML's ``align.texts`` / ``align.text_column``); by default the command line's
            ``--texts``/``--text-column``, or from Python :func:`hm3.align`'s ``texts_file``
            and ``text_column``.
        where: how messages name the file, whole (``texts='t.jsonl'``), instead of
            ``options[0]`` and the path; ``options[1]`` still names the column.

    Returns:
        A :class:`TextFile` for :func:`iter_text_batches`.

    Raises:
        Hm3Error: missing file, unsupported type, no rows, or no such column.
    """
    path = Path(path)
    if options is None:  # the command line's flags, or hm3.align's keywords
        where = where or spell(f"--texts {path}", f"texts_file={str(path)!r}")
        column_option = spell("--text-column", "text_column")
    else:
        where, column_option = where or f"{options[0]} {path}", options[1]
    table_format(path, where, f"give a {', '.join(FORMATS)} file of texts")
    names, rows = peek_columns(path, where)
    if rows == 0:
        raise Hm3Error(f"{where}: the file has no rows; give a file with unlabeled texts")
    if column not in names:
        shown = ", ".join(map(str, names)) or "none"
        raise Hm3Error(
            f"{where}: no column {column!r}; columns in the file: {shown}; set {column_option} "
            "to one of them"
        )
    return TextFile(path, column, rows, where, column_option)


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
        if value is None or (isinstance(value, str) and is_blank(value)):
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
        at = lone_surrogate(value)
        if at is not None:
            raise Hm3Error(
                f"{texts.where}: row {row} of column {texts.column!r} is "
                f"{NOT_UNICODE.format(at=at)}; fix the row or drop it"
            )
        batch.append(value)
        count.texts += 1
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _values(texts: TextFile) -> Iterator[tuple[int, Any]]:
    """(row number, value of the text column), one row at a time; the first row is row 1, as
    in every message about a row."""
    for row, record in iter_records(texts.path, texts.where, [texts.column]):
        yield row + 1, record.get(texts.column)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
