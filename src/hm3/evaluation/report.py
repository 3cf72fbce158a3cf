"""Present evaluation results: terminal tables, report.md, a report directory.

Tables, models side by side: average macro-F1 per model (paper Table 1), macro-F1 per task,
accuracy per (dataset, task), and, when the originals were evaluated, each model's agreement with
them per task. :func:`write_report` writes a report directory
atomically (:func:`hm3.io.atomic.atomic_dir`)::

    results.json                 the result (EvaluationResult.to_json)
    report.md                    the tables in markdown, the plots, the metric definitions
    accuracy_<task>.png          accuracy per dataset, one bar per model (Figures 4 and 6)
    original_vs_<model>.png      the originals against one model (Figures 8-13)
    confusion_<task>.png         a confusion matrix per model, side by side (Figures 14-25)

The schema of the results is :mod:`hm3.evaluation.results`; the PNG plots are drawn by
:mod:`hm3.evaluation.plots`. This module runs no model and computes no metric (see
:mod:`hm3.evaluation.run` and :mod:`hm3.evaluation.scoring`).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hm3.evaluation.results import EvaluationResult, TaskResult, VsOriginal
from hm3.io.atomic import atomic_dir

METRICS_MD = """\
- **macro-F1** (per model and task): scikit-learn's `f1_score(average="macro")` over the rows
  of every dataset that expects a label for the task, pooled. It averages over the labels that
  occur among the expected or predicted labels, so a task that is only ever expected to answer
  `benign` but sometimes answers `jailbreak` scores at most 0.5.
- **accuracy** (per model, task and dataset): the share of the dataset's rows given the
  expected label.
- **average F1** (per model): the mean macro-F1 over the model's tasks (paper Table 1).
- **confusion matrix** (per model and task): rows are expected labels, columns predicted ones;
  cells show the share of the row (its count is on the row label).
- **agreement with the originals** (per model and task, when the originals were evaluated): the
  share of the task's rows on which the model gives the same label as the task's original.
  `+a −b`: of the rows where the two differ, the model gives the expected label on a of them
  and the original on b (on the rest neither does); a − b is what replacing the original gains
  on this suite, in rows.
- **vs originals** (per model, with `--bootstrap N`): the model's average F1 minus the
  originals' on the tasks both answer, and in brackets the middle 95 % of that difference over
  N redraws of every dataset's rows with replacement (the same rows for every model: a paired
  bootstrap). An interval that contains 0 means this suite cannot tell the two apart."""

AGREEMENT = "Agreement with the originals"
AVERAGE = "Average macro-F1"
CAPTIONS = {
    AGREEMENT: "share of rows given the original's label; +a −b: of the rows where they differ, "
    "the model is right on a, the original on b"
}
VS_CAPTION = (
    "vs originals: average F1 minus the originals' on the tasks both answer [95 % interval over "
    "{draws} paired redraws of the rows]; an interval containing 0 cannot tell them apart"
)
Rows = list[list[str]]


def tables(result: EvaluationResult) -> list[tuple[str, list[str], Rows]]:
    """The tables as (title, header, rows) of strings; "—" where a model has no score.

    The agreement table is left out when no model was compared with the originals.
    """
    names = [m.name for m in result.models]
    average = [
        [m.name, ", ".join(t.task for t in m.tasks) or "—", _fmt(m.average_f1)]
        for m in result.models
    ]
    average_header = ["model", "tasks", "average F1"]
    if any(m.vs_original for m in result.models):
        average_header.append("vs originals")
        for row, m in zip(average, result.models, strict=True):
            row.append(_vs_cell(m.vs_original))
    per_task = [
        [task.name, *[_fmt(_f1(m.task(task.name))) for m in result.models]] for task in result.tasks
    ]
    per_dataset = []
    for data in result.datasets:
        for task, expect in data.expect.items():
            cells = [_fmt(result.accuracy(m.name, task, data.name)) for m in result.models]
            per_dataset.append([data.name, task, expect, str(data.evaluated), *cells])
    found = [
        (AVERAGE, average_header, average),
        ("Macro-F1 per task", ["task", *names], per_task),
        ("Accuracy per dataset", ["dataset", "task", "expected", "n", *names], per_dataset),
    ]
    compared = [m for m in result.models if any(t.agreement for t in m.tasks)]
    if compared:
        rows = [
            [task.name, *[_agreement_cell(m.task(task.name)) for m in compared]]
            for task in result.tasks
        ]
        header = ["task", *[m.name for m in compared]]
        found.append((AGREEMENT, header, rows))
    return found


def print_tables(result: EvaluationResult, console: Console | None = None) -> None:
    """Print the tables with rich (to stdout unless ``console`` says otherwise)."""
    console = console or Console()
    for title, header, rows in tables(result):
        # Text, not markup: model, task and dataset names are the user's
        table = Table(title=Text(title), title_justify="left")
        for name in header:
            table.add_column(Text(name))
        for row in rows:
            table.add_row(*map(Text, row))
        console.print(table)
        if note := caption(title, result):
            console.print(Text(f"  {note}", style="dim"), highlight=False)


def markdown(result: EvaluationResult, images: dict[str, list[tuple[str, str]]]) -> str:
    """report.md: a summary, the tables, the images (section → [(caption, file)]), metrics."""
    models = ", ".join(f"`{m.name}`" for m in result.models)
    lines = [
        "# hm3 evaluation report",
        "",
        f"Suite `{result.suite}`: {len(result.datasets)} datasets, {len(result.tasks)} tasks, "
        f"models {models}; limit {result.limit or 'none'}, seed {result.seed}, "
        f"{result.seconds:.1f} s.",
    ]
    for title, header, rows in tables(result):
        lines += ["", f"## {title}", "", _md_row(header), _md_row(["---"] * len(header))]
        lines += [_md_row(row) for row in rows]
        if note := caption(title, result):
            lines += ["", note[0].upper() + note[1:] + "."]
    for section, figures in images.items():
        if figures:
            lines += ["", f"## {section}"]
            lines += [f"\n![{caption}]({file})" for caption, file in figures]
    lines += ["", "## Metrics", "", METRICS_MD, ""]
    return "\n".join(lines)


def write_report(result: EvaluationResult, out: str | Path, *, force: bool = False) -> Path:
    """Write results.json, report.md and the PNG plots to the directory ``out``, atomically."""
    from hm3.evaluation.plots import write_plots  # matplotlib: only when a report is written

    out = Path(out)
    with atomic_dir(out, force) as tmp:
        (tmp / "results.json").write_text(result.to_json() + "\n", encoding="utf-8")
        images = write_plots(result, tmp)
        (tmp / "report.md").write_text(markdown(result, images), encoding="utf-8")
    return out


def _agreement_cell(score: TaskResult | None) -> str:
    if score is None or score.agreement is None:
        return "—"
    a = score.agreement
    return f"{a.rate:.3f} (+{a.model_right} −{a.original_right})"


def _vs_cell(vs: VsOriginal | None) -> str:
    if vs is None:
        return "—"
    return f"{vs.difference:+.3f} [{vs.low:+.4f}, {vs.high:+.4f}]"  # 4 digits: which side of 0


def caption(title: str, result: EvaluationResult) -> str | None:
    """The note printed under a table, if it has one."""
    if title == AVERAGE:
        draws = next((m.vs_original.draws for m in result.models if m.vs_original), None)
        return VS_CAPTION.format(draws=draws) if draws else None
    return CAPTIONS.get(title)


def _f1(score: TaskResult | None) -> float | None:
    return score.f1 if score is not None else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
