"""The demo's results and its top-level report: Table 1, the originals, the timings.

:class:`DemoResult` is what :func:`hm3.demo.run.run_demo` returns and what ``summary.json``
holds. :func:`write_summary` writes ``summary.json`` and ``report.md`` (which links the
per-case evaluation reports with their plots); :func:`table1` gives Table 1 as rows of strings
for the terminal and the markdown alike. Nothing here runs a model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from hm3.defaults import ridge_label
from hm3.demo.data.prepare import DemoData
from hm3.evaluation.scoring import ORIGINAL

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class OriginalInfo:
    """One fine-tuned original: where it is and how good it is on its own test set."""

    task: str
    labels: tuple[str, ...]
    path: str
    validation_f1: float
    test_f1: float
    train_seconds: float
    reused: bool


@dataclass(frozen=True)
class CaseResult:
    """One case study: average F1 per model (``original`` and each merge), and per task."""

    name: str
    title: str
    tasks: tuple[str, ...]
    average_f1: Mapping[str, float | None]  # model → mean macro-F1 over the case's tasks
    per_task: Mapping[str, Mapping[str, float]]  # model → task → macro-F1


@dataclass(frozen=True)
class DemoResult:
    path: Path
    quick: bool
    seed: int
    data_root: str
    methods: tuple[str, ...]
    aligned: bool
    ridge: float | str
    originals: tuple[OriginalInfo, ...]
    cases: tuple[CaseResult, ...]
    timings: Mapping[str, float]  # step → seconds
    seconds: float
    base_model: str = ""  # the base the originals were fine-tuned from (a directory)

    def columns(self) -> list[str]:
        """Table 1's model columns: original, then each method (and its aligned twin)."""
        cols = [ORIGINAL]
        for method in self.methods:
            cols += [method, f"{method}+align"] if self.aligned else [method]
        return cols

    def to_json(self) -> str:
        data = asdict(self)
        data["path"] = str(self.path)
        return json.dumps({"version": SUMMARY_VERSION, **data}, indent=2)


def table1(result: DemoResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table 1: average macro-F1 per case study and model."""
    header = ["case study", "tasks", *result.columns()]
    rows = [
        [
            case.name,
            " + ".join(case.tasks),
            *(_fmt(case.average_f1.get(c)) for c in result.columns()),
        ]
        for case in result.cases
    ]
    return header, rows


def per_task_table(result: DemoResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows: macro-F1 per (case study, task) and model."""
    header = ["case study", "task", *result.columns()]
    rows = [
        [case.name, task, *(_fmt(case.per_task.get(c, {}).get(task)) for c in result.columns())]
        for case in result.cases
        for task in case.tasks
    ]
    return header, rows


def print_table1(result: DemoResult, console: Console | None = None) -> None:
    """Table 1 on the terminal, narrow: a method's cell reads "merged → aligned"."""
    console = console or Console(file=sys.stdout)
    title = "Table 1: average macro-F1" + (" (merged → aligned)" if result.aligned else "")
    table = Table("case", ORIGINAL, *result.methods, title=title, title_justify="left")
    for case in result.cases:
        cells = [_fmt(case.average_f1.get(m)) for m in result.methods]
        if result.aligned:
            cells = [
                f"{c} → {_fmt(case.average_f1.get(f'{m}+align'))}"
                for c, m in zip(cells, result.methods, strict=True)
            ]
        table.add_row(case.name, _fmt(case.average_f1.get(ORIGINAL)), *cells)
    # a pipe or file gets 80 columns from rich: let a wide table (more methods) keep its rows
    wide = Measurement.get(console, console.options.update_width(1000), table).maximum
    if not console.is_terminal and wide > console.width:
        console = Console(file=console.file, width=wide, no_color=console.no_color)
    console.print(table)
    for case in result.cases:
        console.print(f"  {case.name}: {' + '.join(case.tasks)}", highlight=False)


def write_summary(result: DemoResult, folder: Path, data: DemoData) -> None:
    """Write ``summary.json`` and ``report.md`` into ``folder``."""
    (folder / "summary.json").write_text(result.to_json() + "\n", encoding="utf-8")
    (folder / "report.md").write_text(_markdown(result, data), encoding="utf-8")


def _markdown(result: DemoResult, data: DemoData) -> str:
    mode = "quick (CI-sized data)" if result.quick else "full"
    lines = [
        "# hm3 demo report",
        "",
        f"Four classifiers fine-tuned from all-MiniLM-L6-v2 on real offline data ({mode}, seed "
        f"{result.seed}), merged with HM3 and evaluated against the originals on the paper-style "
        f"suite `{data.suite}`. Average macro-F1 = mean over the case's tasks of the pooled "
        "macro-F1 (paper Table 1). `+align` is the same merge after hm3's closed-form head "
        f"alignment (ridge {ridge_label(result.ridge)}, on `{data.unlabeled.name}`).",
        "",
        "## Table 1: average macro-F1",
        "",
        *_md_table(*table1(result)),
        "",
        "## Macro-F1 per task",
        "",
        *_md_table(*per_task_table(result)),
        "",
        "## The originals",
        "",
        *_md_table(*_originals_table(result)),
        "",
        "Test F1: each original on its own test split (`originals/report.md`).",
        "",
        "## Evaluation reports (tables, per-dataset accuracy, confusion matrices)",
        "",
        *(f"- [{c.name}: {c.title}]({c.name}/report.md)" for c in result.cases),
        "- [originals on their own test sets](originals/report.md)",
        "",
        "## Time",
        "",
        ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
        + f"; total {result.seconds:.0f} s.",
        "",
        *_try_it(result, data),
    ]
    return "\n".join(lines)


def _try_it(result: DemoResult, data: DemoData) -> list[str]:
    """Where the demo's models and data are, for a user's own merges (the README's
    Quickstart) and searches."""
    tasks = ", ".join(o.task for o in result.originals)
    return [
        "## Try hm3 on these models",
        "",
        "The demo's models and data stay in its cache, for your own merge configs and suites:",
        "",
        f"- base model (`base_model:`): `{result.base_model}`",
        *(
            f"- {o.task} (`model:` with `name: {o.task}`, as the suites name it; `--originals "
            f"{o.task}=`): `{o.path}`"
            for o in result.originals
        ),
        f"- data: `{data.root}`: `{data.suite.name}` (the suite above, from the test splits), "
        f"`{data.unlabeled.name}` (unlabeled texts for `align:`), and per task ({tasks}) "
        "`<task>/train.jsonl`, `validation.jsonl`, `test.jsonl` (column `text`, `label`)",
        "",
    ]


def _originals_table(result: DemoResult) -> tuple[list[str], list[list[str]]]:
    header = ["task", "labels", "validation F1", "test F1", "fine-tuning"]
    rows = [
        [
            o.task,
            ", ".join(o.labels),
            _fmt(o.validation_f1),
            _fmt(o.test_f1),
            f"{o.train_seconds:.0f} s" + (" (cached)" if o.reused else ""),
        ]
        for o in result.originals
    ]
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
