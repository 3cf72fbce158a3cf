"""``hm3 demo``: the offline demo (real classifiers merged as in the paper, Table 1).

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
    ProgressOpt,
    RidgeOpt,
    err_console,
    out_console,
    run_options,
)
from hm3.defaults import ridge_or_auto

DEMO_EVAL_LIMIT = 60  # rows per dataset: a cached `hm3 demo` stays within 3 minutes on 2 cores


ReportOpt = Annotated[Path, typer.Option("--out", "-o", help="Report directory (must not exist).")]
QuickOpt = Annotated[
    bool, typer.Option("--quick", help="Small data sizes (minutes; the same code path).")
]
CacheOpt = Annotated[
    Path | None,
    typer.Option(help="Cache of sources, data and models (default: $HM3_CACHE or ~/.cache/hm3)."),
]
EvalLimitOpt = Annotated[
    int, typer.Option(min=0, help="Evaluate a seeded sample of N rows per dataset (0: all rows).")
]
MethodsOpt = Annotated[
    str,
    typer.Option(
        help="Table 1's merges, a comma list of soup, ties, dare_ties, dare_ties_search (the "
        "paper's search, --search-trials trials), and hm3's regmean and tsv (not in the "
        "paper; each adds about a minute). Default: the paper's four, soup, ties, dare_ties "
        "and dare_ties_search.",
        show_default=False,  # a table cell cuts it at 80 columns
    ),
]


def demo(
    out: ReportOpt = Path("hm3-report"),
    quick: QuickOpt = False,
    seed: Annotated[int, typer.Option(help="Seed of the splits, fine-tuning and merges.")] = 0,
    cache: CacheOpt = None,
    align: Annotated[
        bool, typer.Option("--align/--no-align", help="Also evaluate every merge aligned.")
    ] = True,
    ridge: RidgeOpt = None,
    batch_size: BatchOpt = 16,
    max_length: MaxLengthOpt = 64,
    eval_limit: EvalLimitOpt = DEMO_EVAL_LIMIT,
    device: DeviceOpt = "cpu",
    keep_models: Annotated[
        bool, typer.Option("--keep-models", help="Keep the merged models in the report.")
    ] = False,
    methods: MethodsOpt = "soup,ties,dare_ties,dare_ties_search",
    search_trials: Annotated[
        int, typer.Option(min=1, help="Trials of the dare_ties_search column (paper: 500).")
    ] = 3,
    force: ForceOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Run the offline demo: real classifiers merged as in the paper, evaluated, Table 1.

    Fine-tunes (or reuses) four guard classifiers from all-MiniLM-L6-v2 on real data shipped in
    registry packages, merges the paper's two case studies and all four with soup, TIES,
    DARE-TIES and a short DARE-TIES search (Algorithm 3), aligns each merge, evaluates everything
    against the originals and writes the report (tables, plots) to --out.
    """
    run = run_options(locals())
    from hm3.demo.cases import DemoOptions
    from hm3.demo.run import run_demo
    from hm3.demo.summary import print_table1

    options = DemoOptions(
        seed=seed,
        quick=quick,
        align=align,
        ridge=ridge_or_auto(ridge),
        eval_limit=eval_limit or None,
        keep_models=keep_models,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        search_trials=search_trials,
        run=run,
    )
    result = run_demo(out, cache_dir=cache, options=options, console=err_console)
    print_table1(result, out_console)
    err_console.print(
        f"report → {result.path}/report.md ({result.seconds:.0f} s); its last section lists the "
        "models and data to try hm3 on",
        highlight=False,
    )
