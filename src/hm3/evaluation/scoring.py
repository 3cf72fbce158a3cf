"""The metrics of an evaluation, from the predicted labels (scikit-learn), per model and task.

- **macro-F1**: ``f1_score(y_true, y_pred, average="macro", zero_division=0)`` pooled over
  every dataset that expects a label for the task. The labels averaged over are those that
  occur among the expected or predicted labels (scikit-learn's default ``labels=None``): a
  task only ever expected to say ``benign`` that wrongly says ``jailbreak`` even once gets F1 0
  for ``jailbreak``, so its macro-F1 is at most 0.5.
- **accuracy** per dataset: the fraction of the dataset's rows given the expected label.
- **average F1** of a model: the mean of its tasks' macro-F1 (paper Table 1).
- **confusion matrix** over all the task's labels in order: rows expected, columns predicted.
- **agreement with the original** (when the originals answer the task): the share of the
  pooled rows on which a model gives the original's label, and, of the rows where they differ,
  how many each of the two gets right.

It runs no model (:mod:`hm3.evaluation.run` predicts) and writes nothing
(:mod:`hm3.evaluation.report` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from hm3.evaluation.results import Agreement, DatasetAccuracy, ModelResult, TaskResult
from hm3.evaluation.suite import Dataset

#: the column of the originals: one single-task classifier per task
ORIGINAL = "original"
#: predictions[(model, task, dataset)] = predicted label names, one per row of the dataset
Predictions = dict[tuple[str, str, str], np.ndarray]


def score_model(
    name: str,
    sources: Mapping[str, str],
    datasets: Sequence[Dataset],
    labels: Mapping[str, tuple[str, ...]],
    preds: Predictions,
) -> ModelResult:
    """Score each task of the column ``name`` that the suite expects, in suite order.

    Args:
        name: the column (``original`` for the originals).
        sources: task → the directory of the classifier answering it in this column.
        datasets: the suite's datasets.
        labels: task → its labels in order (the confusion matrix's rows and columns).
        preds: every column's predictions (the originals' are needed for agreement).
    """
    results = [
        score_task(name, task, labels[task], [d for d in datasets if task in d.expected], preds)
        for task in suite_tasks(datasets)
        if task in sources
    ]
    average = float(np.mean([r.f1 for r in results])) if results else None
    kind = "original" if name == ORIGINAL else "model"
    return ModelResult(
        name=name, kind=kind, sources=dict(sources), average_f1=average, tasks=tuple(results)
    )


def suite_tasks(datasets: Sequence[Dataset]) -> list[str]:
    """The tasks the suite expects labels for, in order of first mention."""
    return list(dict.fromkeys(task for data in datasets for task in data.expected))


def score_task(
    model: str,
    task: str,
    labels: tuple[str, ...],
    datasets: Sequence[Dataset],
    predictions: Predictions,
) -> TaskResult:
    """Pooled macro-F1, confusion matrix, and per-dataset accuracy of one model on one task."""
    trues = [np.asarray(d.expected[task], dtype=object) for d in datasets]
    preds = [predictions[(model, task, d.name)] for d in datasets]
    y_true, y_pred = np.concatenate(trues), np.concatenate(preds)
    per_dataset = tuple(
        DatasetAccuracy(
            dataset=d.name,
            expect=d.expect[task],
            accuracy=float(accuracy_score(t, p)),
            support=len(t),
        )
        for d, t, p in zip(datasets, trues, preds, strict=True)
    )
    matrix = confusion_matrix(y_true, y_pred, labels=list(labels))
    return TaskResult(
        task=task,
        f1=float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        support=len(y_true),
        labels=labels,
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        datasets=per_dataset,
        agreement=_agreement(model, task, datasets, predictions, y_true, y_pred),
    )


def _agreement(
    model: str,
    task: str,
    datasets: Sequence[Dataset],
    predictions: Predictions,
    y_true: np.ndarray,
    y_pred: np.ndarray,
) -> Agreement | None:
    """The model's labels against the original's on the same pooled rows (None: no original)."""
    keys = [(ORIGINAL, task, d.name) for d in datasets]
    if model == ORIGINAL or any(k not in predictions for k in keys):
        return None
    theirs = np.concatenate([predictions[k] for k in keys])
    differ = y_pred != theirs
    return Agreement(
        rate=float(1.0 - differ.mean()),
        differ=int(differ.sum()),
        model_right=int((y_pred[differ] == y_true[differ]).sum()),
        original_right=int((theirs[differ] == y_true[differ]).sum()),
    )
