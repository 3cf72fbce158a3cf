"""The ``hm3`` command line: parse arguments, call one library function, print the result.

Exit codes: 0 success, 2 a user error (bad input, printed as one line without a traceback),
1 a bug. No merge logic lives here.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from hm3 import cli_eval
from hm3.cli_common import (
    BatchOpt,
    DeviceOpt,
    ForceOpt,
    MaxLengthOpt,
    OutOpt,
    PickleOpt,
    ProgressOpt,
    err_console,
    help_paragraphs,
    out_console,
    print_alignment,
)
from hm3.errors import Hm3Error

app = typer.Typer(
    name="hm3",
    help="Merge fine-tuned text classifiers with different label spaces into one (HM3).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _command(fn):
    """Register ``fn`` as a command whose help is its docstring with each paragraph unwrapped.

    Typer keeps the single line breaks of a docstring's later paragraphs, so a terminal narrower
    than the source would show them as ragged lines.
    """
    return app.command(help=help_paragraphs(fn.__doc__))(fn)


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )


@_command
def merge(
    config: Annotated[Path, typer.Argument(help="Merge config (YAML).")],
    out: OutOpt,
    force: ForceOpt = False,
    device: Annotated[str, typer.Option(help="Where to compute: cpu or cuda.")] = "cpu",
    dtype: Annotated[
        str | None,
        typer.Option(help="Output dtype (float32, float16, bfloat16); default: config's."),
    ] = None,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Merge the classifiers of CONFIG into one checkpoint at --out (aligned if CONFIG says so).

    With an `align: {texts: FILE}` block in CONFIG, the merged heads are then re-fitted to the
    originals on those unlabeled texts, as `hm3 align` does.
    """
    from hm3.config import DTYPES, MergeConfig
    from hm3.recipe import merge as run_recipe

    if dtype is not None and dtype not in DTYPES:
        raise Hm3Error(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    cfg = MergeConfig.from_yaml(config)
    result = run_recipe(
        cfg,
        out,
        force=force,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        progress=progress,
    )
    tasks = ", ".join(f"{t.name} ({len(t.labels)} labels)" for t in result.tasks)
    if result.regmean is not None:
        used = ", ".join(f"{m['n_texts']} ({m['name']})" for m in result.regmean["models"])
        err_console.print(
            f"regmean: {result.regmean['linear_weights']} linear layers solved from each "
            f"model's Gram matrices on its texts: {used}",
            highlight=False,
        )
    if result.alignment is not None:
        print_alignment(result.alignment)
    err_console.print(
        f"merged {tasks} with {cfg.merge_method} → {result.path} ({result.seconds:.1f} s)"
    )


@_command
def expand(
    config: Annotated[Path, typer.Argument(help="Merge config (YAML).")],
    out: OutOpt,
    force: ForceOpt = False,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Write HM3-expanded models, a zero-head base and a mergekit.yaml to --out."""
    from hm3.config import MergeConfig
    from hm3.export import expand as do_expand

    cfg = MergeConfig.from_yaml(config)
    path = do_expand(cfg, out, force=force, allow_pickle=allow_pickle, progress=progress)
    err_console.print(
        f"expanded {len(cfg.models)} models → {path} (run: mergekit-yaml {path}/mergekit.yaml OUT)"
    )


@_command
def predict(
    model: Annotated[Path, typer.Argument(help="Merged or ordinary classifier directory.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (the server's schema).")
    ] = False,
    batch_size: BatchOpt = 32,
    max_length: MaxLengthOpt = 512,
    device: DeviceOpt = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Classify TEXTS with every task of MODEL."""
    from hm3.classifier import PredictResponse, load

    clf = load(model, device=device, allow_pickle=allow_pickle, max_length=max_length)
    results = clf.predict(texts, batch_size=batch_size)
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


_command(cli_eval.evaluate)
_command(cli_eval.align)
_command(cli_eval.demo)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hm3`` console script; exits with 0, 1 or 2.

    An :class:`Hm3Error` is the user's to fix: its one line, no traceback, status 2. Any other
    exception is a bug: the plain traceback (to report), one line saying so, status 1.
    """
    try:
        app(args=argv, prog_name="hm3")
    except Hm3Error as exc:
        _error_line(str(exc))
        sys.exit(2)
    except Exception as exc:  # anything else is a bug: say so, keep the traceback for a report
        traceback.print_exception(exc, file=sys.stderr)
        detail = (str(exc).splitlines() or [""])[0][:200]
        _error_line(
            f"internal error ({type(exc).__name__}: {detail}) — this is a bug in hm3 (or a "
            "fault of the system it runs on); please report it with the traceback above"
        )
        sys.exit(1)


def _error_line(message: str) -> None:
    # escaped: messages quote user input and tensor names such as `[score.weight]`
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
