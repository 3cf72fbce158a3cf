"""Evaluation of texts of any length: one evaluated classifier's probabilities with windows.

:func:`hm3.evaluation.run.evaluate` truncates texts by default (its numbers, the demo's
Table 1 among them, stay those of earlier runs); with ``windows`` it calls
:func:`windowed_proba` for each classifier, which scores long texts in overlapping windows
(:mod:`hm3.model.windows`) under the task names and labels the evaluation gives them (an
original's one task is renamed to the task it answers for; placeholder labels take the names of
the other models). It reads no file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from hm3.errors import Hm3Error, spell
from hm3.model.labels import Task
from hm3.model.predictor import BasePredictor
from hm3.model.windows import Windows, default_label


def check_default_labels(windows: Windows | None, tasks: Sequence[str]) -> None:
    """Every task given a default label (``--default-label``, ``Windows(default_labels=...)``)
    must be one the evaluation scores."""
    unknown = [t for t in (windows.default_labels if windows else {}) if t not in tasks]
    if unknown:
        raise Hm3Error(
            f"{default_label(unknown[0], None)}: no evaluated model answers task {unknown[0]!r}; "
            f"tasks: {', '.join(tasks)}"
        )


def windowed_proba(
    clf: object,
    model: str,
    tasks: Sequence[Task],
    texts: Sequence[str],
    batch_size: int,
    windows: Windows,
    advance: Callable[[], None],
) -> dict[str, np.ndarray]:
    """Per task (named as ``tasks``), probabilities ``[len(texts), K]`` in input order.

    ``tasks`` are the classifier's own tasks renamed (same order, segments and label order).
    Texts go in length order, ``batch_size`` texts at a time (their windows may make more
    forward passes); ``advance()`` is called after each group.

    Raises:
        Hm3Error: a classifier that hm3 did not load (windows need its tokenizer and forward).
    """
    if not isinstance(clf, BasePredictor):
        off = spell("--windows", "windows (windows=None)")
        raise Hm3Error(
            f"model {model!r}: texts in windows need a classifier hm3 loads (give its "
            f"directory), not a {type(clf).__name__}; or evaluate without {off}"
        )
    own = list(clf.tasks)
    defaults = {}
    for theirs, mine in zip(tasks, own, strict=True):
        if theirs.name in windows.default_labels:
            label = windows.default_labels[theirs.name]
            if label not in theirs.labels:
                raise Hm3Error(
                    f"{default_label(theirs.name, label)}: task {theirs.name!r} has no label "
                    f"{label!r}; its labels are {', '.join(theirs.labels)}"
                )
            defaults[mine.name] = mine.labels[theirs.labels.index(label)]
    rule = dataclasses.replace(windows, default_labels=defaults)
    out = {t.name: np.zeros((len(texts), t.size), dtype=np.float32) for t in own}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        probs = clf.predict_proba([texts[i] for i in idx], batch_size, rule)
        for task in own:
            out[task.name][idx] = probs[task.name]
        advance()
    return {theirs.name: out[mine.name] for theirs, mine in zip(tasks, own, strict=True)}
