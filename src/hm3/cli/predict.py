"""``hm3 predict``: classify texts with every task of a model.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from hm3.cli.common import err_console, out_console, with_run_options
from hm3.cli.long_texts import windows_note, with_windows
from hm3.options import RunOptions

if TYPE_CHECKING:
    from hm3.model.windows import Windows


@with_run_options(batch_size=32, max_length=512, device="cpu", dtype="float32", allow_pickle=False)
@with_windows(True)
def predict(
    model: Annotated[Path, typer.Argument(help="Merged or ordinary classifier directory.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (the server's schema).")
    ] = False,
    *,
    options: RunOptions,
    windows: Windows | None,
) -> None:
    """Classify TEXTS with every task of MODEL (a text longer than --max-length tokens is
    scored in overlapping windows unless --no-windows truncates it)."""
    from hm3.model.classifier import load
    from hm3.model.predictor import PredictResponse

    clf = load(model, options=options)
    results = clf.predict(texts, batch_size=options.batch_size, windows=windows)
    note = windows and windows_note(clf.tasks, clf.window_counts(texts, windows), windows)
    if note:
        err_console.print(note)
    if json_out:
        out_console.print_json(PredictResponse(results=results).model_dump_json())
        return
    # Text, not markup: texts, task and label names are the user's ("[/]" would not parse)
    table = Table()
    for header in ("text", *(t.name for t in clf.tasks)):
        table.add_column(Text(header))
    for text, result in zip(texts, results, strict=True):
        cells = [
            Text(f"{p.label} ({p.scores[p.label]:.2f})")
            for p in (result.tasks[t.name] for t in clf.tasks)
        ]
        table.add_row(Text(text if len(text) <= 60 else text[:57] + "..."), *cells)
    out_console.print(table)
