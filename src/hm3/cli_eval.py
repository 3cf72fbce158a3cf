"""``hm3 evaluate``, ``hm3 align`` and ``hm3 demo``: parse, call one library function, print.

Registered on the ``hm3`` app by :mod:`hm3.cli`; exit codes and error printing live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hm3.cli_common import (
    BatchOpt,
    DeviceOpt,
    ForceOpt,
    MaxLengthOpt,
    OutOpt,
    PickleOpt,
    ProgressOpt,
    RidgeOpt,
    ScaleOpt,
    err_console,
    out_console,
    parse_named_paths,
    parse_ridge,
    parse_scale,
    print_alignment,
)

DEMO_EVAL_LIMIT = 60  # rows per dataset: a cached `hm3 demo` stays within 3 minutes on 2 cores


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
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Redraw every dataset's rows N times (e.g. 1000) and give each model's average "
            "F1 minus the originals' with a 95 % interval (paired bootstrap); needs --originals.",
        ),
    ] = 0,
    batch_size: BatchOpt = 32,
    max_length: MaxLengthOpt = 512,
    device: DeviceOpt = None,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Evaluate MODELS (merged or single-task) and --originals on the datasets of SUITE."""
    from hm3.evaluation import evaluate as run_evaluation
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
        bootstrap=bootstrap,
    )
    if json_out:
        typer.echo(result.to_json())
    else:
        print_tables(result, out_console)
    if out is not None:
        write_report(result, out, force=force)
        err_console.print(f"report → {out}/report.md")


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
    ridge: RidgeOpt = None,
    scale: ScaleOpt = None,
    base: Annotated[
        str | None,
        typer.Option(help="The merge's base model, for --scale (default: the one it records)."),
    ] = None,
    max_texts: Annotated[int | None, typer.Option(help="Use at most the first N texts.")] = None,
    batch_size: BatchOpt = 32,
    max_length: MaxLengthOpt = 512,
    device: Annotated[str, typer.Option(help="Where to run the models: cpu or cuda.")] = "cpu",
    force: ForceOpt = False,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Re-fit each task's head rows of MERGED so it reproduces its original's logits on --texts."""
    from hm3.alignment import align as do_align

    by_task = parse_named_paths(originals or [], "--originals", need_name=True)
    result = do_align(
        merged,
        texts,
        out,
        originals=by_task,
        ridge=parse_ridge(ridge),
        scale=parse_scale(scale),
        base_model=base,
        text_column=text_column,
        max_texts=max_texts,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        force=force,
        allow_pickle=allow_pickle,
        progress=progress,
    )
    print_alignment(result)


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
    ridge: RidgeOpt = None,
    batch_size: BatchOpt = 16,
    max_length: MaxLengthOpt = 64,
    eval_limit: Annotated[
        int,
        typer.Option(min=0, help="Evaluate a seeded sample of N rows per dataset (0: all rows)."),
    ] = DEMO_EVAL_LIMIT,
    device: DeviceOpt = None,
    keep_models: Annotated[
        bool, typer.Option("--keep-models", help="Keep the merged models in the report.")
    ] = False,
    methods: Annotated[
        str,
        typer.Option(
            help="Table 1's merges, a comma list of soup, ties, dare_ties, and hm3's regmean "
            "and tsv (not in the paper; each adds about a minute)."
        ),
    ] = "soup,ties,dare_ties",
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
        ridge=parse_ridge(ridge),
        batch_size=batch_size,
        max_length=max_length,
        eval_limit=eval_limit or None,
        device=device,
        keep_models=keep_models,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
    )
    result = run_demo(
        out, cache_dir=cache, options=options, force=force, progress=progress, console=err_console
    )
    print_table1(result, out_console)
    err_console.print(f"report → {result.path}/report.md ({result.seconds:.0f} s)", highlight=False)
