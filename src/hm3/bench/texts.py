"""The texts ``hm3 bench`` classifies: from a table file, or the distinct texts of a suite.

A suite's datasets are taken in turns (one text of each, then the next of each ...), so a
limited sample mixes every dataset's lengths instead of being the first dataset alone. This
module reads files only; it runs no model.
"""

from __future__ import annotations

from itertools import chain, zip_longest
from pathlib import Path

from hm3.errors import Hm3Error
from hm3.evaluation.suite import load_datasets, load_suite
from hm3.io.texts import iter_text_batches, open_texts


def bench_texts(
    texts: Path | None,
    suite: Path | None,
    *,
    column: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """The texts of ``texts`` (a .jsonl/.csv/.tsv/.parquet file) or of ``suite``, at most ``limit``.

    ``column`` is the column of ``texts`` holding the texts (``None``: ``text``); a suite names
    its datasets' columns itself, so ``column`` is refused with ``suite``.

    Raises:
        Hm3Error: neither or both given, a column with a suite, an unreadable file, or no texts.
    """
    if (texts is None) == (suite is None):
        raise Hm3Error(
            "hm3 bench: give the texts to classify with --texts FILE (a .jsonl/.csv/.tsv/.parquet "
            "with a text column) or --suite SUITE.yaml, one of them"
        )
    if suite is not None and column is not None:
        raise Hm3Error(
            f"--text-column {column}: applies to --texts only (a suite names its datasets' text "
            "columns itself, `text:` in each dataset); drop --text-column"
        )
    if limit is not None and limit < 1:
        raise Hm3Error(f"--limit {limit}: expected at least 1 text")
    if texts is not None:
        opened = open_texts(texts, column or "text", options=("--texts", "--text-column"))
        out = list(chain.from_iterable(iter_text_batches(opened, 1024, max_texts=limit)))
        where = f"--texts {texts}"
    else:
        datasets = load_datasets(load_suite(suite))
        turns = chain.from_iterable(zip_longest(*(d.texts for d in datasets)))
        out = list(dict.fromkeys(t for t in turns if t is not None))[:limit]
        where = f"--suite {suite}"
    if not out:
        raise Hm3Error(f"{where}: no texts to classify; give a file with non-empty texts")
    return out
