"""What head alignment produces: the fit statistics of a pass over the texts, and the results.

:class:`AlignStats` holds one pass's sufficient statistics (:mod:`hm3.alignment.fit`) with the plan
that produced them: one :class:`TextFit` per text file, each fitting the heads of the tasks that
file is for (one file for every head, or each task's own, :attr:`AlignPlan.texts`). It solves
for any ridge (or ``"auto"``), measures the fit, records it for the metadata and model card, and
folds a solution into a loaded model. :class:`AlignResult` is what
:func:`hm3.alignment.api.align` returns. No I/O, no model runs: see :mod:`hm3.alignment.api`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from hm3.alignment.fit import AUTO_RIDGES, RidgeSolution, RidgeStats, stitch
from hm3.alignment.scale import BodyScale, gcv_score
from hm3.defaults import AUTO_RIDGE as AUTO
from hm3.defaults import AUTO_SCALE, DEFAULT_RIDGE, ridge_or_auto
from hm3.io.texts import TextCount, TextFile
from hm3.model.classifier import Classifier
from hm3.model.features import Original, Projection
from hm3.model.labels import Task
from hm3.version import __version__


@dataclass(frozen=True)
class TaskAlignment:
    """One task's fit: its original, ridge and λ, and the logit RMSE vs the original on the
    fitting texts."""

    name: str
    original: str
    rmse_before: float
    rmse_after: float
    ridge: float  # relative (chosen per task when the ridge is "auto")
    lam: float  # the effective λ


@dataclass(frozen=True)
class AlignResult:
    path: Path
    n_texts: int  # every text fitted on (each file's, summed, with a file per task)
    ridge: float | str  # as asked: a number, or "auto" (each task's in ``tasks``)
    lam: float | None  # the effective λ (ridge × trace(centred XᵀX) / d); None with "auto"
    texts_sha256: str | dict[str, str]  # the file's, or task → its file's
    tasks: tuple[TaskAlignment, ...]
    seconds: float
    skipped: int = 0  # blank rows of the text file
    scale: float = 1.0  # the body's task-vector scale used (chosen, with "auto")
    scale_scores: dict[float, float] | None = None  # with "auto": each scale tried, its score


@dataclass(frozen=True)
class AlignPlan:
    merged: Path
    config: dict
    tasks: list[Task]
    texts: TextFile | dict[str, TextFile]  # one file for every head, or task → its own
    originals: dict[str, Original]

    def files(self) -> list[tuple[TextFile, list[Task]]]:
        """Each distinct text file and the tasks whose heads it fits, in task order."""
        if isinstance(self.texts, TextFile):
            return [(self.texts, list(self.tasks))]
        paths = {name: file.path for name, file in self.texts.items()}
        first = {file.path.resolve(): file for file in reversed(self.texts.values())}
        return [(first[path.resolve()], tasks) for path, tasks in by_path(paths, self.tasks)]


def by_path(paths: dict[str, Path], tasks: list[Task]) -> list[tuple[Path, list[Task]]]:
    """Tasks grouped by the file they are fitted on (one file, resolved, once), in the order
    of each file's first task: the order both ``hm3 align`` and a search read them."""
    out: dict[Path, tuple[Path, list[Task]]] = {}
    for task in tasks:
        path = paths[task.name]
        out.setdefault(path.resolve(), (path, []))[1].append(task)
    return list(out.values())


@dataclass
class TextFit:
    """One text file's pass: the fit statistics of every logit at each body scale run, of which
    only its ``tasks``' are used, and the merged model's error on them before alignment."""

    texts: TextFile
    tasks: list[Task]
    by_scale: dict[float, RidgeStats]  # 1 included
    sse_before: torch.Tensor  # [K] Σ (merged logit − original logit)², its tasks' rows
    count: TextCount


@dataclass
class AlignStats:
    """The pass over the texts: fit statistics for every logit, and the merged model's error."""

    plan: AlignPlan
    projection: Projection
    fits: list[TextFit]  # one per text file
    body: BodyScale | None = None  # set when the pass also ran the body at other scales
    scale: float = 1.0  # the scale the statistics used belong to
    scores: dict[float, float] | None = None  # each scale's score, once one was chosen

    @property
    def n_texts(self) -> int:
        return sum(fit.by_scale[self.scale].n for fit in self.fits)

    @property
    def count(self) -> TextCount:
        return TextCount(
            sum(f.count.texts for f in self.fits), sum(f.count.skipped for f in self.fits)
        )

    def at_scale(self, scale: float | str, ridge: float | str = DEFAULT_RIDGE) -> AlignStats:
        """These statistics at one scale of the body, or at the best-scoring with ``"auto"``.

        The score (:func:`hm3.alignment.scale.gcv_score`) estimates each aligned head's error
        against its original on texts like its fitting ones, at ``ridge``, summed over tasks.
        """
        scales = self.fits[0].by_scale
        if scale != AUTO_SCALE:
            if float(scale) not in scales:
                raise ValueError(f"scale {scale} was not run; scales run: {sorted(scales)}")
            return replace(self, scale=float(scale))
        bias = self.projection.bias is not None

        def score(s: float) -> float:
            return sum(gcv_score(f.by_scale[s], [(t.start, t.end) for t in f.tasks], ridge,
                                 intercept=bias) for f in self.fits)  # fmt: skip

        scores = {s: score(s) for s in scales}
        best = min(scores, key=lambda s: (scores[s], abs(s - 1)))
        return replace(self, scale=best, scores=scores)

    def solve(self, ridge: float | str = DEFAULT_RIDGE) -> RidgeSolution:
        """The new projection rows of every task for a relative ridge strength, or ``"auto"``:
        each task at the ridge with the lowest generalised cross-validation score. A task's
        rows come from its own text file's fit."""
        ridge = ridge_or_auto(ridge)
        groups = [(t.start, t.end) for t in self.plan.tasks]
        bias = self.projection.bias is not None
        solutions = [f.by_scale[self.scale].solve_for(ridge, groups, intercept=bias)
                     for f in self.fits]  # fmt: skip
        if len(solutions) == 1:
            return solutions[0]
        return stitch([(solution, (t.start, t.end))
                       for fit, solution in zip(self.fits, solutions, strict=True)
                       for t in fit.tasks])  # fmt: skip

    def fit_of(self, task: Task) -> TextFit:
        return next(f for f in self.fits if any(t.name == task.name for t in f.tasks))

    def residuals(self, solution: RidgeSolution) -> tuple[TaskAlignment, ...]:
        """Per task, the logit RMSE against the original before and after alignment."""
        out = []
        for task in self.plan.tasks:
            fit = self.fit_of(task)
            denom = fit.by_scale[self.scale].n * task.size
            before = float(fit.sse_before[task.start : task.end].sum()) / denom
            after = float(solution.sse[task.start : task.end].sum()) / denom
            ref = self.plan.originals[task.name].ref
            ridge, lam = float(solution.ridge[task.start]), float(solution.lam[task.start])
            out.append(
                TaskAlignment(task.name, ref, math.sqrt(before), math.sqrt(after), ridge, lam)
            )
        return tuple(out)

    def result(
        self,
        out: Path,
        ridge: float | str,
        solution: RidgeSolution,
        record: dict[str, Any],
        digest: str | dict[str, str],
        seconds: float,
    ) -> AlignResult:
        """The :class:`AlignResult` of ``solution`` once written to ``out``."""
        return AlignResult(
            out,
            self.n_texts,
            ridge,
            record["lambda"],  # None with "auto": each task's is in its TaskAlignment
            digest,
            self.residuals(solution),
            seconds,
            self.count.skipped,
            self.scale,
            self.scores,
        )

    def record(
        self,
        solution: RidgeSolution,
        ridge: float | str,
        digest: str | dict[str, str],
        max_texts: int | None = None,
    ) -> dict[str, Any]:
        """The ``hm3.align`` metadata of a solution (also rendered in the model card). With a
        text file per task, ``texts``, ``texts_sha256`` and ``n_texts`` name each task's."""
        auto = ridge == AUTO
        per_task = isinstance(self.plan.texts, dict)
        texts: str | dict[str, str] = str(self.fits[0].texts.path.resolve())  # not the cwd's
        n_texts: int | dict[str, int] = self.n_texts
        if per_task:
            texts = {t.name: str(self.fit_of(t).texts.path.resolve()) for t in self.plan.tasks}
            n_texts = {t.name: self.fit_of(t).by_scale[self.scale].n for t in self.plan.tasks}
        return {
            "method": "ridge",
            "ridge": ridge,
            "lambda": None if auto else float(solution.lam[0]),
            "lambda_rule": "ridge * trace(centred X^T X) / d; bias unpenalised",
            **(
                {
                    "ridge_choice": "generalised cross-validation per task",
                    "ridge_grid": [*AUTO_RIDGES],
                }
                if auto
                else {}
            ),
            "features": f"input of {self.projection.module}",
            "texts": texts,
            "texts_sha256": digest,
            "text_column": self.fits[0].texts.column,
            "n_texts": n_texts,
            "skipped_rows": self.count.skipped,
            "max_texts": max_texts,
            "tasks": [
                {
                    "name": t.name,
                    "original": t.original,
                    "rmse_before": round(t.rmse_before, 6),
                    "rmse_after": round(t.rmse_after, 6),
                    "ridge": t.ridge,
                    "lambda": t.lam,
                }
                for t in self.residuals(solution)
            ],
            **self._scale_record(),
            "hm3_version": __version__,
        }

    def _scale_record(self) -> dict[str, Any]:
        if self.body is None:
            return {}
        out: dict[str, Any] = {
            "scale": self.scale,
            "scale_base_model": self.body.base_model,
            "scaled_tensors": len(self.body.base),
        }
        if self.scores is not None:
            out["scale_choice"] = "generalised cross-validation, summed over tasks"
            out["scale_scores"] = {f"{s:g}": round(v, 6) for s, v in self.scores.items()}
        return out

    def body_values(self) -> dict[str, torch.Tensor]:
        """The body tensors to write (none when the body stays as merged)."""
        if self.body is None or self.scale == 1:
            return {}
        return self.body.values(self.scale)

    def fold(self, clf: Classifier, solution: RidgeSolution) -> None:
        """Write a solution (and the body at this scale) into a loaded model, in memory."""
        if self.body is not None:
            self.body.apply(clf.model, self.scale)
        module = clf.model.get_submodule(self.projection.module)
        with torch.no_grad():
            module.weight.copy_(solution.weight.to(module.weight.dtype))
            if module.bias is not None:
                module.bias.copy_(solution.bias.to(module.bias.dtype))
