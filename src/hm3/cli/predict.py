"""``hm3 predict``: classify texts with every task of a model.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hm3.cli.common import (
    BatchOpt,
    DeviceOpt,
    MaxLengthOpt,
    PickleOpt,
    err_console,
    out_console,
    run_options,
)
from hm3.cli.long_texts import (
    CombineOpt,
    DefaultLabelOpt,
    StrideOpt,
    parse_windows,
    windows_note,
    windows_option,
)


def predict(
    model: Annotated[Path, typer.Argument(help="Merged or ordinary classifier directory.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (the server's schema).")
    ] = False,
    batch_size: BatchOpt = 32,
    max_length: MaxLengthOpt = 512,
    device: DeviceOpt = "cpu",
    allow_pickle: PickleOpt = False,
    windows: Annotated[bool, windows_option(True)] = True,
    stride: StrideOpt = None,
    combine: CombineOpt = "max",
    default_label: DefaultLabelOpt = None,
) -> None:
    """Classify TEXTS with every task of MODEL (a text longer than --max-length tokens is
    scored in overlapping windows unless --no-windows truncates it)."""
    options = run_options(locals())
    from hm3.model.classifier import load
    from hm3.model.predictor import PredictResponse

    how = parse_windows(windows, stride, combine, default_label)
    clf = load(model, options=options)
    results = clf.predict(texts, batch_size=options.batch_size, windows=how)
    note = how and windows_note(clf.tasks, clf.window_counts(texts, how), how)
    if note:
        err_console.print(note)
    if json_out:
        out_console.print_json(PredictResponse(results=results).model_dump_json())
        return
    table = Table("text", *[t.name for t in clf.tasks])
    for text, result in zip(texts, results, strict=True):
        cells = [
            f"{p.label} ({p.scores[p.label]:.2f})"
            for p in (result.tasks[t.name] for t in clf.tasks)
        ]
        table.add_row(text if len(text) <= 60 else text[:57] + "...", *cells)
    out_console.print(table)
