"""``--prune``: stop a trial on part of the validation sample once it has almost no chance left
of becoming the best, judged paired against the best trial on the same rows.

A trial is scored slice by slice (:data:`hm3.search.data.SLICES`). After each slice but the
last, :class:`Pruner` compares the trial's decisions on the rows scored so far with the
decisions of the study's best complete trial on the same rows (the objective's own measure:
per-task macro-F1 pooled over datasets, or agreement with the originals, averaged over tasks):

1. ``d``, the trial's score minus the best's on the rows seen, and ``d_i`` on each of
   :data:`DRAWS` paired redraws of those rows (each dataset's rows redrawn with replacement,
   the same rows for both trials and every task, as in :mod:`hm3.evaluation.bootstrap`);
2. the difference on the whole sample is predicted as ``d + sqrt(1 - f) · (d_i - d)``, ``f``
   the share of the sample seen: the seen rows say where the difference lies, the unseen
   ``1 - f`` can still move it, by less the more has been seen;
3. the trial is stopped when fewer than :data:`LEVEL` of the predictions are ``>= 0`` and
   the two disagree on at least :data:`MIN_DISAGREEMENTS` of the rows seen (a redraw of a few
   disagreements, all in the best's favour, would rule out what the unseen rows can still do).

Two close merges are rarely told apart on a slice (their paired redraws straddle 0), so a trial
that could still win runs to the end; one clearly behind the best stops after an eighth of the
rows. The rule needs the best trial's decisions: a trial that completes ahead of every complete
trial stores its own (a byte per text and task, base64) as the user attribute
:data:`ATTR`, so every worker of a shared study prunes against the same best. Without them
(no complete trial yet, or the best's were not stored) nothing is pruned.

It runs no model and writes nothing but that attribute.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hm3.model.labels import Task
from hm3.search.data import Labelled, Unlabelled

#: paired redraws of the rows seen
DRAWS = 400
#: redraws made at once (memory: CHUNK × rows seen)
CHUNK = 50
#: stop a trial when its chance to finish at least level with the best is below this
LEVEL = 0.01
#: rows seen (counted per task) on which the two must decide differently before a trial is stopped
MIN_DISAGREEMENTS = 10
#: the user attribute holding a trial's decisions on the validation sample
ATTR = "decisions"


def decisions(logits: np.ndarray, tasks: Sequence[Task]) -> np.ndarray:
    """Each text's decision (label index) per task: ``[texts, tasks]``, int16."""
    return np.stack([logits[:, t.start : t.end].argmax(axis=1) for t in tasks], axis=1).astype(
        np.int16
    )


def encode(dec: np.ndarray) -> dict[str, Any]:
    """Decisions as a JSON-able user attribute: one byte per text and task where labels fit."""
    dtype = "<u1" if dec.size == 0 or int(dec.max()) < 256 else "<i2"
    data = base64.b64encode(np.ascontiguousarray(dec, dtype=dtype).tobytes()).decode("ascii")
    return {"shape": list(dec.shape), "dtype": dtype, "data": data}


def decode(attr: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """The decisions of :func:`encode`, or ``None`` when absent or not of ``shape``."""
    if not isinstance(attr, dict) or tuple(attr.get("shape", ())) != shape:
        return None
    raw = base64.b64decode(attr["data"])
    return np.frombuffer(raw, dtype=attr["dtype"]).reshape(shape).astype(np.int16)


def macro_f1_batch(confusion: np.ndarray) -> np.ndarray:
    """:func:`hm3.evaluation.bootstrap.macro_f1` of each of ``[draws, k, k]`` matrices."""
    tp = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    total = confusion.sum(axis=2) + confusion.sum(axis=1)
    present = total > 0
    f1 = np.where(present, 2 * tp / np.maximum(total, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


@dataclass
class _Part:
    """One task's rows seen: each row's text, its truth and the datasets it is drawn from."""

    column: int  # the task's column in the decisions
    texts: np.ndarray  # per row: its text in the bank
    truth: np.ndarray  # per row: the expected label's index (agreement: the original's decision)
    groups: list[int]  # the stage's groups these rows come from, in order
    k: int  # labels (0: agreement, a share of equal decisions instead of macro-F1)


@dataclass
class _Stage:
    """The rows seen after one stage; redraws pick rows within each group (a dataset, or all the
    unlabeled texts), the same rows for every task and both trials."""

    fraction: float  # share of the sample seen
    sizes: list[int]  # rows per group
    parts: list[_Part]
    seed: int


def _labelled_stage(sample: Labelled, tasks: Sequence[Task], stage: int, seed: int) -> _Stage:
    kept = [(d, r, np.flatnonzero(st <= stage)) for d, r, st in
            zip(sample.datasets, sample.rows, sample.stages, strict=True)]  # fmt: skip
    kept = [(d, r, k) for d, r, k in kept if len(k)]
    parts = []
    for column, task in enumerate(tasks):
        mine = [g for g, (d, _, _) in enumerate(kept) if task.name in d.expected]
        if not mine:
            continue
        index = {label: i for i, label in enumerate(task.labels)}
        texts = np.concatenate([kept[g][1][kept[g][2]] for g in mine])
        truth = [index[kept[g][0].expected[task.name][i]] for g in mine for i in kept[g][2]]
        parts.append(_Part(column, texts, np.asarray(truth, np.int64), mine, len(task.labels)))
    seen = sum(len(k) for _, _, k in kept)
    return _Stage(seen / sum(len(r) for r in sample.rows), [len(k) for *_, k in kept], parts, seed)


def _unlabelled_stage(sample: Unlabelled, tasks: Sequence[Task], stage: int, seed: int) -> _Stage:
    texts = np.flatnonzero(sample.bank.stage <= stage)
    theirs = decisions(sample.originals, tasks)
    parts = [_Part(j, texts, theirs[texts, j].astype(np.int64), [0], 0) for j in range(len(tasks))]
    return _Stage(len(texts) / len(sample.bank.texts), [len(texts)], parts, seed)


def scores(stage: _Stage, *decs: np.ndarray) -> np.ndarray:
    """Each trial's objective on the rows seen (column 0) and on each of :data:`DRAWS` paired
    redraws of them (columns 1…): ``[trials, DRAWS + 1]``. Redraws are made :data:`CHUNK` at a
    time from ``stage.seed``, so memory stays small for any sample."""
    rng = np.random.default_rng(stage.seed)
    out = np.zeros((len(decs), DRAWS + 1))
    starts = [np.cumsum([0] + [stage.sizes[g] for g in p.groups])[:-1] for p in stage.parts]
    said = [[d[p.texts, p.column].astype(np.int64) for d in decs] for p in stage.parts]
    for lo in range(0, DRAWS + 1, CHUNK):
        n = min(CHUNK, DRAWS + 1 - lo)
        picks = [rng.integers(0, size, (n, size)) for size in stage.sizes]
        if lo == 0:  # column 0: the rows as they are
            for p, size in zip(picks, stage.sizes, strict=True):
                p[0] = np.arange(size)
        for part, first, theirs in zip(stage.parts, starts, said, strict=True):
            rows = np.concatenate([s + picks[g] for s, g in zip(first, part.groups, strict=True)],
                                  axis=1)  # fmt: skip
            for t, one in enumerate(theirs):
                out[t, lo : lo + n] += _score(part, one, rows) / len(stage.parts)
    return out


def _score(part: _Part, said: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if part.k == 0:  # agreement with the originals
        return (said == part.truth)[rows].mean(axis=1)
    k = part.k
    cells = (part.truth * k + said)[rows] + (np.arange(len(rows)) * k * k)[:, None]
    counts = np.bincount(cells.ravel(), minlength=len(rows) * k * k)
    return macro_f1_batch(counts.reshape(len(rows), k, k))


def disagreements(stage: _Stage, one: np.ndarray, other: np.ndarray) -> int:
    """Rows seen (per task) on which two trials' decisions differ."""
    return sum(int((one[p.texts, p.column] != other[p.texts, p.column]).sum()) for p in stage.parts)


def chance_level(diff: np.ndarray, fraction: float) -> float:
    """Share of predicted whole-sample differences ``>= 0`` (``diff[0]``: on the rows seen)."""
    d = diff[0]
    return float(np.mean(d + np.sqrt(max(1.0 - fraction, 0.0)) * (diff[1:] - d) >= 0))


@dataclass
class Pruner:
    """The ``--prune`` rule for one process's sample (labelled, or unlabelled for agreement)."""

    sample: Labelled | Unlabelled
    tasks: Sequence[Task]
    seed: int
    _stages: dict[int, _Stage] = field(default_factory=dict)
    _best: tuple[int, np.ndarray] | None = None  # (trial number, its decisions)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.sample.bank.texts), len(self.tasks))

    def stage(self, s: int) -> _Stage:
        if s not in self._stages:
            make = _labelled_stage if isinstance(self.sample, Labelled) else _unlabelled_stage
            self._stages[s] = make(self.sample, self.tasks, s, self.seed + s)  # type: ignore[arg-type]
        return self._stages[s]

    def best(self, study: Any) -> np.ndarray | None:
        """The decisions of the study's best complete trial (``None``: none, or not stored)."""
        try:
            trial = study.best_trial
        except ValueError:  # no complete trial yet
            return None
        if self._best is None or self._best[0] != trial.number:
            dec = decode(trial.user_attrs.get(ATTR), self.shape)
            if dec is None:
                return None
            self._best = (trial.number, dec)
        return self._best[1]

    def should_stop(self, study: Any, logits: np.ndarray, s: int) -> bool:
        """Whether a trial with these logits on stages ``<= s`` has under :data:`LEVEL` chance
        to finish at least level with the best."""
        best = self.best(study)
        if best is None:
            return False
        stage, mine = self.stage(s), decisions(logits, self.tasks)
        if disagreements(stage, mine, best) < MIN_DISAGREEMENTS:
            return False
        ours, theirs = scores(stage, mine, best)
        diff = ours - theirs
        return chance_level(diff, stage.fraction) < LEVEL
