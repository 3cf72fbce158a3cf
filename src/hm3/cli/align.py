"""``hm3 align``: re-fit a merged model's heads to the originals on unlabeled texts.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hm3.cli.common import (
    BatchOpt,
    DeviceOpt,
    ForceOpt,
    MaxLengthOpt,
    OutOpt,
    PickleOpt,
    ProgressOpt,
    RidgeOpt,
    ScaleOpt,
    parse_named_paths,
    print_alignment,
    run_options,
    split_named,
)
from hm3.defaults import ridge_or_auto, scale_or_auto
from hm3.errors import Hm3Error


def align(
    merged: Annotated[
        Path, typer.Argument(help="Merged classifier (or an ordinary one, with --originals).")
    ],
    texts: Annotated[
        list[str],
        typer.Option(
            "--texts",
            metavar="FILE|TASK=FILE",
            help="Unlabeled texts (.jsonl, .csv, .tsv or .parquet) every head is fitted on; or "
            "TASK=FILE for every task (repeat it): each head fitted on its own task's texts.",
        ),
    ],
    out: OutOpt,
    text_column: Annotated[
        str, typer.Option("--text-column", help="Column holding the texts.")
    ] = "text",
    originals: Annotated[
        list[str] | None,
        typer.Option("--originals", help="TASK=DIR: align TASK to this classifier (repeat it)."),
    ] = None,
    ridge: RidgeOpt = None,
    scale: ScaleOpt = None,
    base: Annotated[
        str | None,
        typer.Option(help="The merge's base model, for --scale (default: the one it records)."),
    ] = None,
    max_texts: Annotated[
        int | None, typer.Option(help="Use at most the first N texts (of each file).")
    ] = None,
    batch_size: BatchOpt = 32,
    max_length: MaxLengthOpt = 512,
    device: DeviceOpt = "cpu",
    force: ForceOpt = False,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Re-fit each task's head rows of MERGED so it reproduces its original's logits on --texts."""
    options = run_options(locals())
    from hm3.alignment.api import align as do_align

    by_task = parse_named_paths(originals or [], "--originals", need_name=True)
    result = do_align(
        merged,
        _texts(texts),
        out,
        originals=by_task,
        ridge=ridge_or_auto(ridge),
        scale=scale_or_auto(scale),
        base_model=base,
        text_column=text_column,
        max_texts=max_texts,
        options=options,
    )
    print_alignment(result)


def _texts(given: list[str]) -> Path | dict[str, Path]:
    """One ``--texts FILE``, or ``--texts TASK=FILE`` for every task."""
    named = [split_named(spec, "--texts") for spec in given]
    if len(given) == 1 and named[0][0] is None:
        return Path(given[0])
    plain = next((spec for spec, (name, _) in zip(given, named, strict=True) if name is None), None)
    if plain is not None:
        raise Hm3Error(f"--texts {plain}: with several --texts, each is TASK=FILE (one for every "
                       "task); or give one file for every head")  # fmt: skip
    return parse_named_paths(given, "--texts", need_name=True)
