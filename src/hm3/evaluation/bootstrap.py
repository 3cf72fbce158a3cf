"""Paired bootstrap of average F1: is a model's difference from the originals more than chance?

A suite is a sample: on a few hundred rows per dataset, two models' average F1 can differ by ±0.01
by chance. :func:`compare_with_originals` redraws the rows of every dataset with replacement
``draws`` times, scores every column on each redraw as :mod:`hm3.evaluation.scoring` scores the
suite (per task, macro-F1 pooled over the datasets expecting it; the average over tasks), and
reports each model's average F1 minus the originals', on the tasks both answer, with the 2.5 and
97.5 percentiles of that difference over the redraws and the share of redraws in which it is above
0.

The comparison is paired: each redraw picks the same rows for every column and every task (a
dataset that scores two tasks, a cross-check, is redrawn once for both), so what the rows have
in common cancels out and only the models' differences remain. Redraws are seeded.

It runs no model (predictions come from :mod:`hm3.evaluation.run`) and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from hm3.evaluation.results import VsOriginal
from hm3.evaluation.scoring import ORIGINAL, Predictions, suite_tasks
from hm3.evaluation.suite import Dataset

#: the interval reported: the middle 95 % of the redraws' differences
PERCENTILES = (2.5, 97.5)

Draw = dict[str, np.ndarray]  # dataset name → the row indices of one redraw


def redraws(datasets: Sequence[Dataset], draws: int, seed: int) -> Iterator[Draw]:
    """``draws`` redraws of every dataset's rows with replacement, seeded, in suite order.

    Generated one at a time (memory: one redraw), the same sequence on every call: each
    (column, task) walks through the same redraws.
    """
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        yield {d.name: rng.integers(0, len(d.texts), len(d.texts)) for d in datasets}


def compare_with_originals(
    predictions: Predictions,
    datasets: Sequence[Dataset],
    models: Sequence[str],
    draws: int,
    seed: int,
) -> dict[str, VsOriginal]:
    """Each model's average F1 minus the originals' on the tasks both answer, with its interval.

    Args:
        predictions: every column's predicted labels, as :func:`hm3.evaluation.run.evaluate` keeps
            them: ``(column, task, dataset) → labels``; the originals' column is ``original``.
        datasets: the suite's datasets (with their expected labels).
        models: the columns to compare (the originals' own column is skipped).
        draws: redraws of the rows (1,000 or more for a stable 95 % interval).
        seed: seeds the redraws.

    Returns:
        Column → :class:`~hm3.evaluation.results.VsOriginal`; a column that shares no scored task
        with the originals is left out.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    scored: dict[tuple[str, str], tuple[float, np.ndarray]] = {}

    def score(column: str, task: str) -> tuple[float, np.ndarray]:
        if (column, task) not in scored:
            scored[column, task] = f1_redraws(predictions, datasets, column, task, draws, seed)
        return scored[column, task]

    out = {}
    for model in models:
        tasks = [
            t
            for t in suite_tasks(datasets)
            if model != ORIGINAL
            and _answers(predictions, datasets, model, t)
            and _answers(predictions, datasets, ORIGINAL, t)
        ]
        if not tasks:
            continue
        ours = [score(model, t) for t in tasks]
        theirs = [score(ORIGINAL, t) for t in tasks]
        diff = np.mean([o[1] - t[1] for o, t in zip(ours, theirs, strict=True)], axis=0)
        low, high = np.percentile(diff, PERCENTILES)
        out[model] = VsOriginal(
            tasks=tuple(tasks),
            difference=float(np.mean([o[0] for o in ours]) - np.mean([t[0] for t in theirs])),
            low=float(low),
            high=float(high),
            above=float(np.mean(diff > 0)),
            draws=draws,
            seed=seed,
        )
    return out


def _answers(predictions: Predictions, datasets: Sequence[Dataset], column: str, task: str) -> bool:
    relevant = [d for d in datasets if task in d.expected]
    return bool(relevant) and all((column, task, d.name) in predictions for d in relevant)


def f1_redraws(
    predictions: Predictions,
    datasets: Sequence[Dataset],
    column: str,
    task: str,
    draws: int,
    seed: int,
) -> tuple[float, np.ndarray]:
    """One column's pooled macro-F1 of ``task`` on the suite, and on each of the ``draws``
    redraws of :func:`redraws` (the same redraws for every column and task with one seed)."""
    relevant = [d for d in datasets if task in d.expected]
    truth = np.concatenate([np.asarray(d.expected[task], dtype=object) for d in relevant])
    said = np.concatenate([predictions[column, task, d.name] for d in relevant])
    names = {name: i for i, name in enumerate(sorted({*truth, *said}))}
    k = len(names)
    # each row's cell of the confusion matrix; a redraw weighs the rows by how often it picks them
    cell = np.array([names[y] for y in truth]) * k + np.array([names[y] for y in said])
    starts = np.cumsum([0] + [len(d.texts) for d in relevant])[:-1]
    full = macro_f1(np.bincount(cell, minlength=k * k).reshape(k, k))
    per_draw = np.empty(draws)
    for i, draw in enumerate(redraws(datasets, draws, seed)):
        rows = np.concatenate([s + draw[d.name] for s, d in zip(starts, relevant, strict=True)])
        per_draw[i] = macro_f1(np.bincount(cell[rows], minlength=k * k).reshape(k, k))
    return full, per_draw


def macro_f1(confusion: np.ndarray) -> float:
    """Macro-F1 from a confusion matrix (rows expected, columns predicted), as scikit-learn's
    ``f1_score(average="macro", zero_division=0)`` computes it on the rows behind it: the mean
    of 2·TP / (2·TP + FP + FN) over the labels that are expected or predicted at least once.

    Computed here because the bootstrap scores thousands of redraws, and ``f1_score`` spends
    milliseconds per call checking its input; tests hold the two equal.
    """
    tp = np.diag(confusion).astype(np.float64)
    expected, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (expected + predicted) > 0
    f1 = 2 * tp[present] / (expected[present] + predicted[present])
    return float(f1.mean()) if f1.size else 0.0
