"""The ``hm3`` command line: parse arguments, call one library function, print the result.

Exit codes: 0 success, 2 a user error (bad input, printed as one line without a traceback),
1 a bug. No merge logic lives here.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from hm3.defaults import DEFAULT_RIDGE
from hm3.errors import Hm3Error

if TYPE_CHECKING:
    from hm3.alignment import AlignResult

app = typer.Typer(
    name="hm3",
    help="Merge fine-tuned text classifiers with different label spaces into one (HM3).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
out_console = Console()
err_console = Console(stderr=True)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (must not exist).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")]
PickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle", help="Accept pickled .bin weights (loaded with weights_only=True)."
    ),
]
DEMO_EVAL_LIMIT = 100  # rows per dataset: a cached `hm3 demo` stays within minutes on 2 cores
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
MaxLengthOpt = Annotated[
    int, typer.Option("--max-length", min=1, help="Truncate texts to this many tokens.")
]


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


@app.command()
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
    if result.alignment is not None:
        _print_alignment(result.alignment)
    err_console.print(
        f"merged {tasks} with {cfg.merge_method} → {result.path} ({result.seconds:.1f} s)"
    )


@app.command()
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


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Merged or ordinary classifier directory.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (the server's schema).")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 32,
    max_length: MaxLengthOpt = 512,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: cuda if available).")
    ] = None,
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


@app.command()
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
    force: ForceOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            "--tasks",
            help="Evaluate only these tasks (repeat it, or TASK,TASK); the suite's other "
            "expectations are dropped.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 32,
    max_length: MaxLengthOpt = 512,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: cuda if available).")
    ] = None,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Evaluate MODELS (merged or single-task) and --originals on the datasets of SUITE."""
    from hm3.evaluation import evaluate as run_evaluation
    from hm3.evaluation import parse_named_paths
    from hm3.output import check_output
    from hm3.report import print_tables, write_report
    from hm3.suite import load_suite

    named = parse_named_paths(models or [], "MODEL", need_name=False)
    by_task = parse_named_paths(originals or [], "--originals", need_name=True)
    if out is not None:
        check_output(out, force, inputs=[suite, *named.values(), *by_task.values()])
    loaded = load_suite(suite)
    if tasks:
        loaded = loaded.restricted([t.strip() for v in tasks for t in v.split(",") if t.strip()])
    result = run_evaluation(
        loaded,
        named,
        originals=by_task,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        allow_pickle=allow_pickle,
        progress=progress,
    )
    if json_out:
        typer.echo(result.to_json())
    else:
        print_tables(result, out_console)
    if out is not None:
        write_report(result, out, force=force)
        err_console.print(f"report → {out}/report.md")


@app.command()
def align(
    merged: Annotated[
        Path, typer.Argument(help="Merged classifier (or an ordinary one, with --originals).")
    ],
    texts: Annotated[
        Path, typer.Option("--texts", help="Unlabeled texts: .jsonl, .csv or .parquet.")
    ],
    out: OutOpt,
    text_column: Annotated[
        str, typer.Option("--text-column", help="Column holding the texts.")
    ] = "text",
    originals: Annotated[
        list[str] | None,
        typer.Option("--originals", help="TASK=DIR: align TASK to this classifier (repeat it)."),
    ] = None,
    ridge: Annotated[
        float | None,
        typer.Option(
            help=f"Ridge strength relative to the feature scale, >= 0 (default {DEFAULT_RIDGE})."
        ),
    ] = None,
    max_texts: Annotated[int | None, typer.Option(help="Use at most the first N texts.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 32,
    max_length: MaxLengthOpt = 512,
    device: Annotated[str, typer.Option(help="Where to run the models: cpu or cuda.")] = "cpu",
    force: ForceOpt = False,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Re-fit each task's head rows of MERGED so it reproduces its original's logits on --texts."""
    from hm3.alignment import align as do_align
    from hm3.evaluation import parse_named_paths

    by_task = parse_named_paths(originals or [], "--originals", need_name=True)
    result = do_align(
        merged,
        texts,
        out,
        originals=by_task,
        ridge=DEFAULT_RIDGE if ridge is None else ridge,
        text_column=text_column,
        max_texts=max_texts,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        force=force,
        allow_pickle=allow_pickle,
        progress=progress,
    )
    _print_alignment(result)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Report directory (must not exist).")
    ] = Path("hm3-report"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Small data sizes (minutes; the same code path).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the splits, fine-tuning and merges.")] = 0,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Cache of sources, data and models (default: $HM3_CACHE or ~/.cache/hm3)."
        ),
    ] = None,
    align: Annotated[
        bool, typer.Option("--align/--no-align", help="Also evaluate every merge aligned.")
    ] = True,
    ridge: Annotated[
        float, typer.Option(min=0, help="Ridge strength of the alignment.")
    ] = DEFAULT_RIDGE,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 16,
    max_length: MaxLengthOpt = 64,
    eval_limit: Annotated[
        int,
        typer.Option(min=0, help="Evaluate a seeded sample of N rows per dataset (0: all rows)."),
    ] = DEMO_EVAL_LIMIT,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: cuda if available).")
    ] = None,
    keep_models: Annotated[
        bool, typer.Option("--keep-models", help="Keep the merged models in the report.")
    ] = False,
    force: ForceOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Run the offline demo: real classifiers merged as in the paper, evaluated, Table 1.

    Fine-tunes (or reuses) four guard classifiers from all-MiniLM-L6-v2 on real data shipped in
    registry packages, merges the paper's two case studies and all four with soup, TIES and
    DARE-TIES, aligns each merge, evaluates everything against the originals and writes the
    report (tables, plots) to --out.
    """
    from hm3.demo.run import DemoOptions, run_demo
    from hm3.demo.summary import print_table1

    options = DemoOptions(
        seed=seed,
        quick=quick,
        align=align,
        ridge=ridge,
        batch_size=batch_size,
        max_length=max_length,
        eval_limit=eval_limit or None,
        device=device,
        keep_models=keep_models,
    )
    result = run_demo(
        out, cache_dir=cache, options=options, force=force, progress=progress, console=err_console
    )
    print_table1(result, out_console)
    err_console.print(f"report → {result.path}/report.md ({result.seconds:.0f} s)", highlight=False)


def _print_alignment(result: AlignResult) -> None:
    for task in result.tasks:
        err_console.print(
            f"  {task.name}: logit RMSE vs {task.original}: {task.rmse_before:.4g} → "
            f"{task.rmse_after:.4g}",
            highlight=False,
            soft_wrap=True,
        )
    err_console.print(
        f"aligned {len(result.tasks)} task(s) on {result.n_texts} texts (ridge {result.ridge:g}, "
        f"λ {result.lam:.3g}) → {result.path} ({result.seconds:.1f} s)",
        highlight=False,
    )


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
