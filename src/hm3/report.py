"""Evaluation results: their schema (results.json), terminal tables, report.md, PNG plots.

:class:`EvaluationResult` and its parts are frozen pydantic models, filled in by
:func:`hm3.evaluation.evaluate`; ``results.json`` is :meth:`EvaluationResult.to_json` and reads
back with :meth:`EvaluationResult.from_json`.

Three tables, models side by side: average macro-F1 per model (paper Table 1), macro-F1 per
task, and accuracy per (dataset, task). :func:`write_report` writes a report directory
atomically (:func:`hm3.output.atomic_dir`)::

    results.json                 the result (EvaluationResult.to_json)
    report.md                    the tables in markdown, the plots, the metric definitions
    accuracy_<task>.png          accuracy per dataset, one bar per model (Figures 4 and 6)
    original_vs_<model>.png      the originals against one model (Figures 8-13)
    confusion_<task>.png         a confusion matrix per model, side by side (Figures 14-25)

Plots use matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
This module runs no model and computes no metric (see :mod:`hm3.evaluation`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from hm3.output import atomic_dir

METRICS_MD = """\
- **macro-F1** (per model and task): scikit-learn's `f1_score(average="macro")` over the rows
  of every dataset that expects a label for the task, pooled. It averages over the labels that
  occur among the expected or predicted labels, so a task that is only ever expected to answer
  `benign` but sometimes answers `jailbreak` scores at most 0.5.
- **accuracy** (per model, task and dataset): the share of the dataset's rows given the
  expected label.
- **average F1** (per model): the mean macro-F1 over the model's tasks (paper Table 1).
- **confusion matrix** (per model and task): rows are expected labels, columns predicted ones;
  cells show the share of the row (its count is on the row label)."""

RESULTS_VERSION = 1
Rows = list[list[str]]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetInfo(_Result):
    name: str
    path: str
    rows: int  # rows in the file
    evaluated: int  # rows evaluated (after the limit's sample)
    expect: dict[str, str]  # task → expected label, or "column <name>"


class TaskInfo(_Result):
    name: str
    labels: tuple[str, ...]


class DatasetAccuracy(_Result):
    dataset: str
    expect: str
    accuracy: float
    support: int


class TaskResult(_Result):
    task: str
    f1: float  # macro-F1 pooled over `datasets`
    support: int
    labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows expected, columns predicted, in `labels` order
    datasets: tuple[DatasetAccuracy, ...]


class ModelResult(_Result):
    name: str
    kind: Literal["original", "model"]
    sources: dict[str, str]  # task → classifier directory
    average_f1: float | None  # mean macro-F1 over `tasks` (None when no task was evaluated)
    tasks: tuple[TaskResult, ...]

    def task(self, name: str) -> TaskResult | None:
        return next((t for t in self.tasks if t.task == name), None)


class EvaluationResult(_Result):
    """Everything :func:`evaluate` measured; ``results.json`` is :meth:`to_json`."""

    version: int = RESULTS_VERSION
    suite: str
    seed: int
    limit: int | None
    datasets: tuple[DatasetInfo, ...]
    tasks: tuple[TaskInfo, ...]
    models: tuple[ModelResult, ...]
    seconds: float

    def model(self, name: str) -> ModelResult:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"no model {name!r}; models: {', '.join(m.name for m in self.models)}")

    def average_f1(self, model: str, tasks: Sequence[str] | None = None) -> float | None:
        """Mean macro-F1 of ``model`` over ``tasks`` (default: all it was evaluated on)."""
        results = self.model(model).tasks
        chosen = [t.f1 for t in results if tasks is None or t.task in tasks]
        if tasks is not None and len(chosen) != len(set(tasks)):
            return None
        return float(np.mean(chosen)) if chosen else None

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str) -> EvaluationResult:
        return cls.model_validate_json(text)


def tables(result: EvaluationResult) -> list[tuple[str, list[str], Rows]]:
    """The three tables as (title, header, rows) of strings; "—" where a model has no score."""
    names = [m.name for m in result.models]
    average = [
        [m.name, ", ".join(t.task for t in m.tasks) or "—", _fmt(m.average_f1)]
        for m in result.models
    ]
    per_task = [
        [task.name, *[_fmt(_f1(m.task(task.name))) for m in result.models]] for task in result.tasks
    ]
    per_dataset = []
    for data in result.datasets:
        for task, expect in data.expect.items():
            cells = [_fmt(_accuracy(result, m.name, task, data.name)) for m in result.models]
            per_dataset.append([data.name, task, expect, str(data.evaluated), *cells])
    return [
        ("Average macro-F1", ["model", "tasks", "average F1"], average),
        ("Macro-F1 per task", ["task", *names], per_task),
        ("Accuracy per dataset", ["dataset", "task", "expected", "n", *names], per_dataset),
    ]


def print_tables(result: EvaluationResult, console: Console | None = None) -> None:
    """Print the tables with rich (to stdout unless ``console`` says otherwise)."""
    console = console or Console()
    for title, header, rows in tables(result):
        table = Table(*header, title=title, title_justify="left")
        for row in rows:
            table.add_row(*row)
        console.print(table)


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
    for section, figures in images.items():
        if figures:
            lines += ["", f"## {section}"]
            lines += [f"\n![{caption}]({file})" for caption, file in figures]
    lines += ["", "## Metrics", "", METRICS_MD, ""]
    return "\n".join(lines)


def write_report(result: EvaluationResult, out: str | Path, *, force: bool = False) -> Path:
    """Write results.json, report.md and the PNG plots to the directory ``out``, atomically."""
    out = Path(out)
    with atomic_dir(out, force) as tmp:
        (tmp / "results.json").write_text(result.to_json() + "\n", encoding="utf-8")
        images = write_plots(result, tmp)
        (tmp / "report.md").write_text(markdown(result, images), encoding="utf-8")
    return out


def write_plots(result: EvaluationResult, folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Write every PNG into ``folder``; returns section → [(caption, file name)]."""
    accuracy, versus, confusion = [], [], []
    for task in result.tasks:
        if any(m.task(task.name) for m in result.models):
            accuracy.append(_accuracy_plot(folder, result, task.name))
            title = f"Confusion matrices — task {task.name}"
            confusion.append((title, _confusion_grid(folder, result, task.name, title)))
    original = next((m.name for m in result.models if m.kind == "original"), None)
    for model in result.models if original else ():
        if model.kind != "original":
            versus += _versus(folder, result, original, model.name)
    return {
        "Plots: accuracy per dataset": accuracy,
        "Plots: originals vs each model": versus,
        "Plots: confusion matrices": confusion,
    }


def _accuracy_plot(folder: Path, result: EvaluationResult, task: str) -> tuple[str, str]:
    """Accuracy of every model answering ``task`` on every dataset expecting it."""
    data = [d for d in result.datasets if task in d.expect]
    series = {
        m.name: [_accuracy(result, m.name, task, d.name) for d in data]
        for m in result.models
        if m.task(task)
    }
    groups = [f"{d.name}\n({d.expect[task]})" for d in data]
    title = f"Accuracy per dataset — task {task}"
    return title, _bar_chart(folder, f"accuracy_{task}", title, groups, series)


def _versus(
    folder: Path, result: EvaluationResult, original: str, model: str
) -> list[tuple[str, str]]:
    """Accuracy of the originals and ``model`` on every (dataset, task) both answer."""
    groups, series = [], {original: [], model: []}
    for data in result.datasets:
        for task in data.expect:
            scores = [_accuracy(result, m, task, data.name) for m in (original, model)]
            if None not in scores:
                groups.append(f"{data.name}\n{task} = {data.expect[task]}")
                series[original].append(scores[0])
                series[model].append(scores[1])
    if not groups:
        return []
    title = f"Accuracy: originals vs {model}"
    return [(title, _bar_chart(folder, f"original_vs_{model}", title, groups, series))]


def _bar_chart(
    folder: Path, stem: str, title: str, groups: list[str], series: dict[str, list[float | None]]
) -> str:
    """Horizontal grouped bars, top to bottom: one group per label, one bar per series (model).

    Horizontal so that long dataset names stay legible however many models are compared.
    """
    bars = len(groups) * len(series)
    height = 0.8 / len(series)
    size = (9, max(3.0, 0.1 * bars + 0.25 * len(groups) + 1.2))
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        widths = [math.nan if v is None else v for v in values]
        drawn = ax.barh(y - 0.4 + height * (i + 0.5), widths, height, label=name)
        if bars <= 60:
            ax.bar_label(drawn, fmt="%.2f", fontsize=7, padding=2)
    ax.set_yticks(y, groups, fontsize=8)
    ax.set(xlim=(0, 1.1), ylim=(len(groups) - 0.5, -0.5), xlabel="accuracy", title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="model")
    return _save(fig, folder, stem)


def _confusion_grid(folder: Path, result: EvaluationResult, task: str, title: str) -> str:
    """One confusion matrix per model answering ``task``, at most four per row."""
    from sklearn.metrics import ConfusionMatrixDisplay

    scored = [(m.name, m.task(task)) for m in result.models if m.task(task)]
    cols = min(4, len(scored))
    rows = math.ceil(len(scored) / cols)
    size = 1.8 + 0.7 * len(scored[0][1].labels)
    # "tight", not "constrained": as good here (no legend outside the axes), half the time
    fig = Figure(figsize=(cols * (size + 1.2), rows * (size + 0.9) + 0.6), layout="tight")
    fig.suptitle(f"{title} (rows: expected, columns: predicted)")
    for i, (name, score) in enumerate(scored):
        ax = fig.add_subplot(rows, cols, i + 1)
        counts = np.asarray(score.confusion, dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        ConfusionMatrixDisplay(shares, display_labels=list(score.labels)).plot(
            ax=ax,
            colorbar=False,
            xticks_rotation=45,
            values_format=".2f",
            im_kw={"vmin": 0, "vmax": 1, "cmap": "Blues"},
        )
        support = [f"{lab} ({int(n)})" for lab, n in zip(score.labels, totals[:, 0], strict=True)]
        ax.set_yticks(range(len(score.labels)), support)
        ax.set(title=f"{name} — F1 {score.f1:.3f}", xlabel="predicted", ylabel="expected")
    return _save(fig, folder, f"confusion_{task}")


def _save(fig: Figure, folder: Path, stem: str) -> str:
    name = _unique(folder, re.sub(r"[^A-Za-z0-9_.\-]+", "_", stem))
    FigureCanvasAgg(fig)
    fig.savefig(folder / name, dpi=100)  # the constrained layout fits; "tight" would draw twice
    return name


def _unique(folder: Path, stem: str) -> str:
    name, n = f"{stem}.png", 1
    while (folder / name).exists():
        n += 1
        name = f"{stem}_{n}.png"
    return name


def _accuracy(result: EvaluationResult, model: str, task: str, dataset: str) -> float | None:
    score = result.model(model).task(task)
    found = [d.accuracy for d in score.datasets if d.dataset == dataset] if score else []
    return found[0] if found else None


def _f1(score: TaskResult | None) -> float | None:
    return score.f1 if score is not None else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
