"""The schema of evaluation results: what ``results.json`` holds.

:class:`EvaluationResult` and its parts are frozen pydantic models, filled in by
:func:`hm3.evaluation.run.evaluate`; ``results.json`` is :meth:`EvaluationResult.to_json` and
reads back with :meth:`EvaluationResult.from_json` (older versions included). Presenting them is
:mod:`hm3.evaluation.report`'s and :mod:`hm3.evaluation.plots`'; this module computes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from hm3.errors import Hm3Error
from hm3.io.yaml_input import format_validation_error

#: 2 added ``TaskResult.agreement``, 3 ``ModelResult.vs_original`` (older files read back as
#: version 3, with None where they have nothing)
RESULTS_VERSION = 3


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


class Agreement(_Result):
    """A model's labels for one task against the task's original, on the same rows."""

    rate: float  # share of rows on which the model gives the original's label
    differ: int  # rows on which they differ
    model_right: int  # of those, rows on which the model gives the expected label
    original_right: int  # of those, rows on which the original does


class VsOriginal(_Result):
    """A model's average F1 against the originals', with a paired bootstrap interval."""

    tasks: tuple[str, ...]  # the tasks both answer, over which both averages are taken
    difference: float  # the model's average F1 minus the originals', over `tasks`, no redraw
    low: float  # 2.5th percentile of the difference over the redraws
    high: float  # 97.5th percentile
    above: float  # share of redraws in which the difference is above 0
    draws: int
    seed: int


class TaskResult(_Result):
    task: str
    f1: float  # macro-F1 pooled over `datasets`
    support: int
    labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows expected, columns predicted, in `labels` order
    datasets: tuple[DatasetAccuracy, ...]
    agreement: Agreement | None = None  # vs the original; None for the originals, or without


class ModelResult(_Result):
    name: str
    kind: Literal["original", "model"]
    sources: dict[str, str]  # task → classifier directory
    average_f1: float | None  # mean macro-F1 over `tasks` (None when no task was evaluated)
    tasks: tuple[TaskResult, ...]
    vs_original: VsOriginal | None = None  # with a bootstrap, for models sharing tasks with them

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

    def average_f1(self, model: str, tasks: str | Sequence[str] | None = None) -> float | None:
        """Mean macro-F1 of ``model`` over ``tasks``, a task or several (default: all it was
        evaluated on); None where it was not evaluated on one of them."""
        if isinstance(tasks, str):
            tasks = (tasks,)
        results = self.model(model).tasks
        chosen = [t.f1 for t in results if tasks is None or t.task in tasks]
        if tasks is not None and len(chosen) != len(set(tasks)):
            return None
        return float(np.mean(chosen)) if chosen else None

    def accuracy(self, model: str, task: str, dataset: str) -> float | None:
        """Accuracy of ``model`` on ``task`` over ``dataset`` (None where it was not scored)."""
        score = self.model(model).task(task)
        found = [d.accuracy for d in score.datasets if d.dataset == dataset] if score else []
        return found[0] if found else None

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str) -> EvaluationResult:
        """Read ``results.json``: any version up to this hm3's, as the current version.

        Raises:
            Hm3Error: the text is not JSON, not evaluation results, or from a newer hm3.
        """
        fix = "give the results.json that hm3 evaluate wrote"
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise Hm3Error(f"results.json: not JSON ({exc}); {fix}") from None
        version = data.get("version", RESULTS_VERSION) if isinstance(data, dict) else None
        if isinstance(version, int) and version > RESULTS_VERSION:
            raise Hm3Error(
                f"results.json version {version!r}: this hm3 reads versions up to "
                f"{RESULTS_VERSION}; upgrade hm3 to read it"
            )
        try:
            result = cls.model_validate(data)
        except ValidationError as exc:
            problem = format_validation_error(exc, cls)
            raise Hm3Error(f"results.json: not hm3 evaluation results ({problem}); {fix}") from None
        return result.model_copy(update={"version": RESULTS_VERSION})
