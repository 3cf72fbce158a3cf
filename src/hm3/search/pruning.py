"""``--prune``: stop a trial on part of the validation sample once it has almost no chance left
of becoming the best, judged paired against the best trial on the same rows.

A trial is scored slice by slice (:data:`hm3.search.data.SLICES`). After each slice but the
last, :class:`Pruner` compares the trial's decisions on the rows scored so far with the
decisions of the study's best complete trial on the same rows (the objective's own measure:
per-task macro-F1 pooled over datasets, or agreement with the originals, averaged over tasks):

1. ``d``, the trial's score minus the best's on the rows seen, and ``d_i`` on each of
   :data:`DRAWS` paired redraws of those rows (each dataset's rows redrawn with replacement,
   the same rows for both trials and every task, as :mod:`hm3.evaluation.bootstrap` does);
2. the difference on the whole sample is predicted as ``d + sqrt(1 - f) · (d_i - d)``, ``f``
   the share of the sample seen: the seen rows say where the difference lies, the unseen
   ``1 - f`` can still move it, by less the more has been seen;
3. the trial is stopped when fewer than :data:`LEVEL` of the predictions are ``>= 0`` and
   the two disagree on at least :data:`MIN_DISAGREEMENTS` of the rows seen (a redraw of a few
   disagreements, all in the best's favour, would rule out what the unseen rows can still do).

Two close merges are never told apart on a slice (their paired redraws straddle 0), so a trial
that could still win runs to the end; one clearly behind the best stops after a quarter of the
rows. The rule needs the best trial's decisions: a trial that completes ahead of every complete
trial stores its own (one small integer per text and task, base64) as the user attribute
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

from hm3.evaluation.bootstrap import redraws
from hm3.model.labels import Task
from hm3.search.data import Labelled, Unlabelled, row_subset

#: paired redraws of the rows seen
DRAWS = 400
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
class _Stage:
    """The rows seen after one stage, with the paired redraws of them (row 0: no redraw)."""

    fraction: float  # share of the sample seen
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]  # per task: texts, truth, draws, k
    # (for agreement, truth is the originals' decisions and k is 0)


def _labelled_stage(sample: Labelled, tasks: Sequence[Task], stage: int, seed: int) -> _Stage:
    kept = [(d, r, np.flatnonzero(st <= stage)) for d, r, st in
            zip(sample.datasets, sample.rows, sample.stages, strict=True)]  # fmt: skip
    kept = [(d, r, k) for d, r, k in kept if len(k)]
    cut = [row_subset(d, k) for d, _, k in kept]
    draws = list(redraws(cut, DRAWS, seed))
    parts = []
    for task in tasks:
        pairs = zip(cut, kept, strict=True)
        mine = [(c, r[k]) for c, (_, r, k) in pairs if task.name in c.expected]
        if not mine:
            continue
        index = {label: i for i, label in enumerate(task.labels)}
        texts = np.concatenate([rows for _, rows in mine])
        truth = np.concatenate([[index[y] for y in c.expected[task.name]] for c, _ in mine])
        starts = np.cumsum([0] + [len(rows) for _, rows in mine])[:-1]
        drawn = [np.concatenate([s + draw[c.name] for s, (c, _) in zip(starts, mine, strict=True)])
                 for draw in draws]  # fmt: skip
        picks = np.stack([np.arange(len(texts)), *drawn])
        parts.append((texts, truth.astype(np.int64), picks, len(task.labels)))
    seen = sum(len(k) for _, _, k in kept)
    total = sum(len(r) for r in sample.rows)
    return _Stage(seen / total, parts)


def _unlabelled_stage(sample: Unlabelled, tasks: Sequence[Task], stage: int, seed: int) -> _Stage:
    texts = np.flatnonzero(sample.bank.stage <= stage)
    rng = np.random.default_rng(seed)
    n = len(texts)
    picks = np.concatenate([np.arange(n)[None], rng.integers(0, n, (DRAWS, n))])
    theirs = decisions(sample.originals, tasks)
    parts = [(texts, theirs[texts, j].astype(np.int64), picks, 0) for j in range(len(tasks))]
    return _Stage(n / len(sample.bank.texts), parts)


def scores(stage: _Stage, dec: np.ndarray) -> np.ndarray:
    """The objective on the rows seen (index 0) and on each redraw of them (1…)."""
    out = []
    for j, (texts, truth, picks, k) in enumerate(stage.parts):
        said = dec[texts, j].astype(np.int64)
        if k == 0:  # agreement with the originals
            out.append((said == truth)[picks].mean(axis=1))
            continue
        cells = (truth * k + said)[picks] + (np.arange(len(picks)) * k * k)[:, None]
        counts = np.bincount(cells.ravel(), minlength=len(picks) * k * k)
        out.append(macro_f1_batch(counts.reshape(len(picks), k, k)))
    return np.mean(out, axis=0)


def disagreements(stage: _Stage, one: np.ndarray, other: np.ndarray) -> int:
    """Rows seen (per task) on which two trials' decisions differ."""
    return sum(int((one[t, j] != other[t, j]).sum()) for j, (t, *_) in enumerate(stage.parts))


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
        diff = scores(stage, mine) - scores(stage, best)
        return chance_level(diff, stage.fraction) < LEVEL
