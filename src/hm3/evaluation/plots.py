"""The plots of an evaluation report: accuracy per dataset, originals vs a model, confusion grids.

:func:`write_plots` draws every PNG of a report directory
(:func:`hm3.evaluation.report.write_report` calls it) and returns their captions by section. Plots
use matplotlib's object API with the Agg canvas (no pyplot state, no display needed). Nothing here
computes a metric.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hm3.evaluation.results import EvaluationResult


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
        m.name: [result.accuracy(m.name, task, d.name) for d in data]
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
            scores = [result.accuracy(m, task, data.name) for m in (original, model)]
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
