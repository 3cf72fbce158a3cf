"""``hm3 evaluate``: score models and the originals on a suite; tables, JSON, report.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hm3.cli.common import (
    err_console,
    out_console,
    parse_named_paths,
    with_run_options,
)
from hm3.cli.long_texts import with_windows
from hm3.errors import Hm3Error
from hm3.options import RunOptions

if TYPE_CHECKING:
    from hm3.model.windows import Windows


@with_run_options(
    force=False,
    batch_size=32,
    max_length=512,
    device="cpu",
    dtype="float32",
    allow_pickle=False,
    progress=True,
)
@with_windows(False)
def evaluate(
    suite: Annotated[Path, typer.Argument(help="Evaluation suite (YAML).")],
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models to compare: DIR or NAME=DIR (default name: the directory's)."),
    ] = None,
    originals: Annotated[
        list[str] | None,
        typer.Option("--originals", help="TASK=DIR: the original classifier of TASK (repeat it)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write results.json, report.md, plots here.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            "--tasks",
            help="Evaluate only these tasks (repeat it, or TASK,TASK); the suite's other "
            "expectations are dropped.",
        ),
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Redraw every dataset's rows N times (e.g. 1000) and give each model's average "
            "F1 minus the originals' with a 95 % interval (paired bootstrap); needs --originals.",
        ),
    ] = 0,
    *,
    options: RunOptions,
    windows: Windows | None,
) -> None:
    """Evaluate MODELS (merged or single-task) and --originals on the datasets of SUITE."""
    from hm3.evaluation.report import print_tables, write_report
    from hm3.evaluation.run import evaluate as run_evaluation
    from hm3.evaluation.suite import load_suite
    from hm3.io.atomic import check_output

    named = parse_named_paths(models or [], "MODEL", need_name=False)
    by_task = parse_named_paths(originals or [], "--originals", need_name=True)
    loaded = load_suite(suite)
    if out is not None:
        data = [loaded.resolve(d) for d in loaded.datasets]
        inputs = [suite, *data, *named.values(), *by_task.values()]
        check_output(out, options.force, inputs=inputs)
    if tasks:
        chosen = [t.strip() for v in tasks for t in v.split(",") if t.strip()]
        if not chosen:
            raise Hm3Error(f"--tasks {','.join(tasks)!r}: names no task; give TASK[,TASK...] or "
                           "leave --tasks out for every task")  # fmt: skip
        loaded = loaded.restricted(chosen, "choose --tasks from those")
    result = run_evaluation(
        loaded, named, originals=by_task, bootstrap=bootstrap, windows=windows, options=options
    )
    if json_out:
        typer.echo(result.to_json())
    else:
        print_tables(result, out_console)
    if out is not None:
        write_report(result, out, force=options.force)
        err_console.print(f"report → {out}/report.md")
