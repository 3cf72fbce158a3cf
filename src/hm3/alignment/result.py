"""What head alignment produces: the fit statistics of a pass over the texts, and the results.

:class:`AlignStats` holds one pass's sufficient statistics (:mod:`hm3.alignment.fit`) with the plan
that produced them; it solves for any ridge (or ``"auto"``), measures the fit, records it for
the metadata and model card, and folds a solution into a loaded model. :class:`AlignResult` is
what :func:`hm3.alignment.api.align` returns. No I/O, no model runs: see :mod:`hm3.alignment.api`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from hm3.alignment.fit import AUTO_RIDGES, RidgeSolution, RidgeStats
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
    n_texts: int
    ridge: float | str  # as asked: a number, or "auto" (each task's in ``tasks``)
    lam: float | None  # the effective λ (ridge × trace(centred XᵀX) / d); None with "auto"
    texts_sha256: str
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
    texts: TextFile
    originals: dict[str, Original]


@dataclass
class AlignStats:
    """The pass over the texts: fit statistics for every logit, and the merged model's error."""

    plan: AlignPlan
    projection: Projection
    stats: RidgeStats
    sse_before: torch.Tensor  # [K] Σ (merged logit − original logit)²
    count: TextCount
    body: BodyScale | None = None  # set when the pass also ran the body at other scales
    by_scale: dict[float, RidgeStats] | None = None  # every scale's statistics (1 included)
    scale: float = 1.0  # the scale ``stats`` belongs to
    scores: dict[float, float] | None = None  # each scale's score, once one was chosen

    @property
    def n_texts(self) -> int:
        return self.stats.n

    def at_scale(self, scale: float | str, ridge: float | str = DEFAULT_RIDGE) -> AlignStats:
        """These statistics at one scale of the body, or at the best-scoring with ``"auto"``.

        The score (:func:`hm3.alignment.scale.gcv_score`) estimates each aligned head's error
        against its original on texts like the fitting ones, at ``ridge``.
        """
        by_scale = self.by_scale or {1.0: self.stats}
        if scale != AUTO_SCALE:
            if float(scale) not in by_scale:
                raise ValueError(f"scale {scale} was not run; scales run: {sorted(by_scale)}")
            return replace(self, stats=by_scale[float(scale)], scale=float(scale))
        groups = [(t.start, t.end) for t in self.plan.tasks]
        bias = self.projection.bias is not None
        scores = {s: gcv_score(st, groups, ridge, intercept=bias) for s, st in by_scale.items()}
        best = min(scores, key=lambda s: (scores[s], abs(s - 1)))
        return replace(self, stats=by_scale[best], scale=best, scores=scores)

    def solve(self, ridge: float | str = DEFAULT_RIDGE) -> RidgeSolution:
        """The new projection rows of every task for a relative ridge strength, or ``"auto"``:
        each task at the ridge with the lowest generalised cross-validation score."""
        ridge = ridge_or_auto(ridge)
        groups = [(t.start, t.end) for t in self.plan.tasks]
        return self.stats.solve_for(ridge, groups, intercept=self.projection.bias is not None)

    def residuals(self, solution: RidgeSolution) -> tuple[TaskAlignment, ...]:
        """Per task, the logit RMSE against the original before and after alignment."""
        out = []
        for task in self.plan.tasks:
            denom = self.n_texts * task.size
            before = float(self.sse_before[task.start : task.end].sum()) / denom
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
        digest: str,
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
        digest: str,
        max_texts: int | None = None,
    ) -> dict[str, Any]:
        """The ``hm3.align`` metadata of a solution (also rendered in the model card)."""
        auto = ridge == AUTO
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
            "texts": str(Path(self.plan.texts.path).resolve()),  # not the cwd's relative path
            "texts_sha256": digest,
            "text_column": self.plan.texts.column,
            "n_texts": self.n_texts,
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
