"""Texts of any length: overlapping token windows, and one answer per task from all of them.

A model sees ``max_length`` tokens at most (special tokens included). With :class:`Windows`, a
longer text is split into windows of that size whose starts are ``stride`` content tokens apart
(default: three quarters of a window, so consecutive windows share a quarter); the last window
ends at the text's last token, so every token is in at least one window. A text that fits is
exactly one window, encoded exactly as without windows, so its answer is unchanged bit for bit.

Per task, the windows' probabilities are combined (:func:`combine`):

- ``max`` (the default): the window whose most probable *non-default* label is the most
  probable decides the task; its whole distribution is the text's. A jailbreak at the end of a
  long document is caught however much harmless text comes before it.
- ``mean``: the average of the windows' distributions.

A task's *default* label (the one that means "nothing found", used by ``max`` only) is given
per task, else inferred by :func:`default_labels`: of the task's labels whose names are in
:data:`SAFE_NAMES` (``benign``, ``safe``, ``ham``, ``non_toxic``, ``neutral`` ...), the one
earliest in that list (a sentiment task's ``neutral`` before its ``negative``), else the task's
first label (id 0, which binary detectors conventionally give to "not flagged").

This module tokenizes nothing and runs no model: :class:`hm3.model.predictor.BasePredictor` does,
calling :func:`content_step` to size the windows.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from hm3.errors import Hm3Error, spell
from hm3.model.labels import Task
from hm3.options import named

Combine = Literal["max", "mean"]
COMBINE: tuple[str, ...] = get_args(Combine)
# Label names that mean "nothing to flag", compared after lower-casing and mapping - and space to _;
# most telling first: a task with several takes the earliest here, not its own first.
SAFE_NAMES = (
    "benign",
    "safe",
    "ham",
    "non_toxic",
    "nontoxic",
    "not_toxic",
    "neutral",
    "clean",
    "normal",
    "harmless",
    "legitimate",
    "negative",
    "none",
    "ok",
)


@dataclass(frozen=True)
class Windows:
    """How to score texts longer than the model's window.

    Attributes:
        stride: content tokens between the starts of consecutive windows, 1 to the window's
            content size; ``None``: three quarters of it (a quarter of each window overlaps).
        combine: ``max`` (the most confident non-default window decides) or ``mean``.
        default_labels: task → its default label, for tasks whose inferred one is wrong
            (``max`` only: refused with ``mean``, which has no use for them).
    """

    stride: int | None = None
    combine: Combine = "max"
    default_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.combine not in COMBINE:
            where = named(f"--combine {self.combine}", "combine", self.combine)
            raise Hm3Error(f"{where}: expected one of {', '.join(COMBINE)}")
        whole = isinstance(self.stride, numbers.Integral) and not isinstance(self.stride, bool)
        if self.stride is not None and (not whole or self.stride < 1):
            where = named(f"--stride {self.stride!r}", "stride", self.stride)
            raise Hm3Error(f"{where}: expected a positive number of tokens")
        if not isinstance(self.default_labels, Mapping):
            got = type(self.default_labels).__name__
            raise Hm3Error(f"default_labels: expected a dict of task -> label, got {got}, e.g. "
                           "{'guard': 'benign'}")  # fmt: skip
        if self.default_labels and self.combine != "max":
            given = next(iter(self.default_labels.items()))
            mine, use = _combine(self.combine), _combine("max")
            drop = spell("--default-label", "default_labels")
            raise Hm3Error(
                f"{default_label(*given)}: default labels apply to {use} only ({mine} uses no "
                f"default label); drop {drop} or use {use}"
            )


def _combine(rule: str) -> str:
    """``--combine max`` on the command line, ``combine='max'`` from Python."""
    return named(f"--combine {rule}", "combine", rule)


def default_label(task: str, label: str | None) -> str:
    """``--default-label TASK=LABEL`` on the command line, ``default_labels={'TASK': 'LABEL'}``
    from Python (``label=None``: whatever label was given, shown as ``...``)."""
    cli, py = ("...", "...") if label is None else (label, repr(label))
    return spell(f"--default-label {task}={cli}", f"default_labels={{{task!r}: {py}}}")


def content_step(max_length: int, special: int, stride: int | None) -> tuple[int, int]:
    """The content tokens per window and the step between windows.

    Args:
        max_length: tokens per window, special tokens included.
        special: special tokens the tokenizer adds to one text (``[CLS]`` and ``[SEP]``: 2).
        stride: the asked step, or ``None`` for the default (3/4 of the content).

    Raises:
        Hm3Error: a window too small to hold one content token, or a stride beyond the window
            (tokens between windows would never be seen).
    """
    content = max_length - special
    length = named(f"--max-length {max_length}", "max_length", max_length)
    if content < 1:
        raise Hm3Error(
            f"{length}: too small for windows ({special} special tokens); give at least "
            f"{special + 1}"
        )
    if stride is None:
        return content, max(1, content - content // 4)
    if stride > content:
        raise Hm3Error(
            f"{named(f'--stride {stride}', 'stride', stride)}: expected at most {content}, the "
            f"content tokens of a window ({length} minus {special} special tokens); a larger "
            "stride would skip tokens"
        )
    return content, stride


def spans(n_tokens: int, content: int, step: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` content-token ranges of a text's windows (what the tokenizer cuts).

    Windows start at ``0, step, 2*step, ...`` and the last one ends at ``n_tokens``.
    """
    if n_tokens <= content:
        return [(0, n_tokens)]
    out, start = [], 0
    while True:
        out.append((start, min(start + content, n_tokens)))
        if start + content >= n_tokens:
            return out
        start += step


def normalise(label: str) -> str:
    return label.strip().lower().replace("-", "_").replace(" ", "_")


def default_labels(tasks: Sequence[Task], given: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each task's default label: the one given, else inferred (see the module docstring).

    Raises:
        Hm3Error: a given task the model does not have, or a label its task does not have.
    """
    given = dict(given or {})
    by_name = {t.name: t for t in tasks}
    for name, label in given.items():
        if name not in by_name:
            raise Hm3Error(
                f"{default_label(name, label)}: the model has no task {name!r}; its tasks "
                f"are {', '.join(by_name)}"
            )
        if label not in by_name[name].labels:
            raise Hm3Error(
                f"{default_label(name, label)}: task {name!r} has no label {label!r}; its "
                f"labels are {', '.join(by_name[name].labels)}"
            )
    out = {}
    for task in tasks:
        safe = sorted(
            (lab for lab in task.labels if normalise(lab) in SAFE_NAMES),
            key=lambda lab: SAFE_NAMES.index(normalise(lab)),
        )
        out[task.name] = given.get(task.name) or (safe or list(task.labels))[0]
    return out


def groups(owner: np.ndarray, n_texts: int) -> list[tuple[int, int]]:
    """Per text, the ``[start, end)`` rows of its windows (``owner`` sorted, >= 1 per text)."""
    bounds = np.searchsorted(owner, np.arange(n_texts + 1))
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(n_texts)]


def combine(
    probs: Mapping[str, np.ndarray],
    owner: np.ndarray,
    n_texts: int,
    tasks: Iterable[Task],
    windows: Windows,
) -> dict[str, np.ndarray]:
    """Per task, one distribution per text from its windows' distributions.

    Args:
        probs: task → ``[n_windows, K_task]`` probabilities, windows grouped by text in order.
        owner: ``[n_windows]`` the text of each window (non-decreasing).
        n_texts: number of texts (each has at least one window).
        tasks: the model's tasks.
        windows: the combination rule and the default labels.

    Returns:
        task → ``[n_texts, K_task]``; a one-window text's row is its window's, unchanged.
    """
    tasks = list(tasks)
    defaults = default_labels(tasks, windows.default_labels)
    spans_of = groups(np.asarray(owner), n_texts)
    single = np.array([lo for lo, _ in spans_of], dtype=np.int64)
    multi = [(i, lo, hi) for i, (lo, hi) in enumerate(spans_of) if hi - lo > 1]
    out = {}
    for task in tasks:
        p = probs[task.name]
        rows = p[single].copy()
        keep = np.array([lab != defaults[task.name] for lab in task.labels])
        keep = keep if keep.any() else ~keep  # a one-label task: its only label
        for i, lo, hi in multi:
            if windows.combine == "mean":
                rows[i] = p[lo:hi].astype(np.float64).mean(axis=0).astype(p.dtype)
            else:
                alarm = p[lo:hi][:, keep].max(axis=1)
                rows[i] = p[lo + int(alarm.argmax())]
        out[task.name] = rows
    return out
