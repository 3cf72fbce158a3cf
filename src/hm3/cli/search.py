"""``hm3 search``: the paper's model search (Algorithm 3) and self-merging (§5.4).

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
The work is :func:`hm3.search.run.search`'s; this module parses options and prints the summary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hm3.cli.common import err_console, split_named, with_run_options
from hm3.cli.common import out_console as console
from hm3.errors import Hm3Error
from hm3.options import RunOptions

if TYPE_CHECKING:
    from hm3.search.run import SearchResult

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | None) -> float | None:
    """``90``, ``90s``, ``30m``, ``2h``, ``1h30m`` → seconds (``None`` stays ``None``)."""
    if value is None:
        return None
    text = value.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)([smhd]?))+", text) and re.findall(
        r"(\d+(?:\.\d+)?)([smhd]?)", text
    )
    if not parts:
        raise Hm3Error(f"--timeout {value}: expected a duration such as 90s, 30m, 2h or 1h30m")
    return sum(float(n) * _UNITS[u or "s"] for n, u in parts)


# the options whose help takes more than a line
ValSamplesOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Validation rows per dataset (with --objective agreement: texts read from --texts).",
    ),
]
SamplerOpt = Annotated[
    str,
    typer.Option(
        help="paper: independent draws from each range's prior (random is another name for it); "
        "tpe or cmaes: each draw guided by the trials so far."
    ),
]
PruneOpt = Annotated[
    bool,
    typer.Option(
        "--prune/--no-prune",
        help="Score each trial an eighth of its rows at a time and stop it once it is clearly "
        "behind the best trial on the same rows (a paired comparison).",
    ),
]


@with_run_options(
    device="cpu",
    dtype="float32",
    batch_size=32,
    max_length=512,
    force=False,
    allow_pickle=False,
    progress=True,
)
def search(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (holds the study).")],
    config: Annotated[
        Path | None, typer.Argument(help="Merge config (YAML), with an optional search: block.")
    ] = None,
    suite: Annotated[Path | None, typer.Option(help="Validation suite (YAML).")] = None,
    test_suite: Annotated[
        Path | None,
        typer.Option(help="Test suite; default: other rows of --suite (never the validation's)."),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials in the study, all workers.")] = 100,
    val_samples: ValSamplesOpt = 600,
    test_samples: Annotated[int, typer.Option(min=1, help="Test rows per dataset.")] = 1000,
    sampler: SamplerOpt = "paper",
    seed: Annotated[int, typer.Option(help="Seeds the sampler and the samples.")] = 0,
    objective: Annotated[
        str, typer.Option(help="f1 (labelled suite) or agreement (with the originals, --texts).")
    ] = "f1",
    texts: Annotated[
        Path | None, typer.Option(help="Unlabeled texts for --objective agreement.")
    ] = None,
    text_column: Annotated[str, typer.Option(help="Column of --texts.")] = "text",
    prune: PruneOpt = False,
    storage: Annotated[
        str | None,
        typer.Option(help="postgresql://… or sqlite:///… URL, or a shared journal file path."),
    ] = None,
    study: Annotated[str, typer.Option(help="Study name in --storage.")] = "hm3-search",
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the study in --out: same options, models and suites (a file changed "
            "in place since it started is refused)."
        ),
    ] = False,
    timeout: Annotated[
        str | None,
        typer.Option(help="Start no trial once this long has passed since the start, e.g. 2h."),
    ] = None,
    self_model: Annotated[
        str | None,
        typer.Option(
            "--self",
            metavar="[TASK=]MODEL",
            help="Merge this model with itself (paper §5.4). TASK: its task's name in the suites "
            "(default: the model directory's name).",
        ),
    ] = None,
    base: Annotated[str | None, typer.Option(help="Base model for --self.")] = None,
    *,
    options: RunOptions,
) -> None:
    """Search merge parameters: merge in memory, score on a validation sample, test each new best.

    Without a search: block in CONFIG the space is the paper's: one DARE-TIES density for all
    models from Beta(1.2, 2). The study lives in --out (resume with --resume) or in --storage,
    where any number of workers can run it. Writes trials.csv, search.png, importance.png and
    best/ (a normal hm3 checkpoint with its re-runnable recipe.yaml). --dtype is the dtype
    trials are scored in; the originals are scored in float32 and best/ in the recipe's dtype.
    On a terminal a bar shows the best so far; written to a log, each trial is a line.
    """
    from hm3.search.inputs import SearchSpec
    from hm3.search.run import search as run_search

    self_task = None
    if self_model is not None:
        self_task, self_model = split_named(self_model, "--self")
    spec = SearchSpec(
        config=config, self_model=self_model, self_task=self_task, base=base, suite=suite,
        test_suite=test_suite, trials=trials, val_samples=val_samples, test_samples=test_samples,
        sampler=sampler, seed=seed, objective=objective, texts=texts, text_column=text_column,
        prune=prune, storage=storage, study=study, resume=resume, timeout=parse_duration(timeout),
    )  # fmt: skip
    print_summary(run_search(spec, out, options))


def print_summary(result: SearchResult) -> None:
    """The originals against the best trial, on validation and test (Table 7 for --self)."""
    title = "self-merge (paper Table 7)" if result.self_merge else "search"
    table = Table(title=f"{title}: {result.finished} trials, {result.pruned} pruned")
    table.add_column("")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")

    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "-"

    orig, best = result.originals, result.best
    label = "best self-merge" if result.self_merge else "best merge"
    if result.best_number is not None:
        label += f" (#{result.best_number})"
    scores = (orig.get("val", {}).get("average"), orig.get("test", {}).get("average"),
              best.get("val_average"), best.get("test_average"))  # fmt: skip
    table.add_row("originals", *map(cell, scores[:2]))
    table.add_row(label, *map(cell, scores[2:]))
    # with no suite at all (label-free, no --test-suite) the table would hold only dashes
    console.print(table if any(isinstance(v, float) for v in scores) else table.title)
    if "agreement_average" in best:
        console.print(
            f"{label} on --texts: decisions agree with the originals' on "
            f"{best['agreement_average']:.4f} of texts; probability similarity (1 - total "
            f"variation) {best['similarity_average']:.4f}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    if result.best_values:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in result.best_values.items())  # fmt: skip
        console.print(f"best parameters: {shown}", highlight=False, soft_wrap=True, markup=False)
    if result.wrote_best:
        where = f"{result.out}/best"
    elif result.best_number is None:
        where = "none, no trial finished (a larger --timeout, or --resume to go on)"
    elif result.best_current:
        where = f"{result.out}/best (already trial #{result.best_number})"
    else:  # a worker of a shared study
        where = "not written by this worker (the worker that finishes the study writes it)"
    err_console.print(f"best model: {where}; trials: {result.out}/trials.csv "
                      f"({result.seconds:.1f} s)", highlight=False)  # fmt: skip
