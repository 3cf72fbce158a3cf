"""Read JSON-lines files one record at a time, with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error


def jsonl_records(path: Path, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row, record)`` for each non-blank line of a JSON-lines file, streamed.

    Raises:
        Hm3Error: a line that is not JSON, or not a JSON object, named by ``where`` and number.
    """
    with path.open(encoding="utf-8-sig") as f:
        row = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise Hm3Error(f"{where}: line {lineno} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise Hm3Error(
                    f"{where}: line {lineno} is not a JSON object; write one object per line"
                )
            yield row, record
            row += 1
