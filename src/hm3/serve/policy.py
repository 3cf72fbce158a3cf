"""Flagging rules of ``hm3 serve --policy``: which task scores make a text ``flagged``.

A policy file::

    rules:
      - task: prompt_attack
        not: benign          # fires when P(any label but benign) >= min_score
        min_score: 0.8
      - task: toxicity
        label: toxic         # fires when P(toxic) >= min_score
        min_score: 0.5
      - task: spam
        label: [spam, scam]  # a list: the labels' probabilities are added
        min_score: 0.5

Each rule names one task and a set of its labels, given either as ``label`` (those labels) or as
``not`` (every label but those); it fires when the set's probability (the sum, within the
task's own softmax, added in float64) reaches ``min_score`` (default 0.5), allowing for float32
rounding (:data:`ROUNDING`): a sum that is 1 up to rounding fires ``min_score: 1``. A text is
flagged when any rule
fires; each fired rule is one reason. Unknown keys, tasks or labels are refused when the server
starts. What it does not: score texts or combine tasks' probabilities with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hm3.errors import Hm3Error
from hm3.io.yaml_input import did_you_mean, format_validation_error, load_yaml_mapping
from hm3.model.labels import Task


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    task: str
    label: str | list[str] | None = None
    not_: str | list[str] | None = Field(default=None, alias="not")
    min_score: float = Field(default=0.5, gt=0.0, le=1.0, strict=True)  # true is not 1.0

    @model_validator(mode="after")
    def _one_of_label_not(self) -> Rule:
        if (self.label is None) == (self.not_ is None):
            raise ValueError("give exactly one of label (these labels) or not (all but these)")
        if self.label == []:
            raise ValueError("label: [] names no label, so the rule could never fire; name one")
        if self.not_ == []:
            raise ValueError("not: [] leaves out no label, so the rule would flag every text; "
                             "name the labels that are not flagged")  # fmt: skip
        return self

    def named(self) -> list[str]:
        given = self.label if self.label is not None else self.not_
        return [given] if isinstance(given, str) else list(given or [])


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(min_length=1)


class Reason(BaseModel):
    """Why a text is flagged: the rule's task, its labels, their probability and the threshold."""

    rule: int
    task: str
    labels: list[str]
    score: float
    min_score: float


class Policy:
    """Validated rules, bound to a model's tasks; :meth:`apply` flags one text's scores."""

    def __init__(self, rules: Sequence[Rule], tasks: Sequence[Task], source: str) -> None:
        by_name = {t.name: t for t in tasks}
        self._rules: list[tuple[int, Rule, str, list[int], list[str]]] = []
        for i, rule in enumerate(rules):
            task = by_name.get(rule.task)
            if task is None:
                raise Hm3Error(
                    f"{source}: rules[{i}].task {rule.task!r} is not a task of the model"
                    f"{did_you_mean(rule.task, by_name)}; its tasks: {', '.join(by_name)}"
                )
            for label in rule.named():
                if label not in task.labels:
                    raise Hm3Error(
                        f"{source}: rules[{i}]: {label!r} is not a label of task {task.name}"
                        f"{did_you_mean(label, task.labels)}; its labels: "
                        f"{', '.join(task.labels)}"
                    )
            chosen = set(rule.named())
            labels = [x for x in task.labels if (x in chosen) == (rule.label is not None)]
            if not labels:
                raise Hm3Error(
                    f"{source}: rules[{i}].not excludes every label of task {task.name}, so "
                    "it could never fire; leave at least one label out"
                )
            if len(labels) == len(task.labels):  # their probabilities sum to 1 on every text
                raise Hm3Error(
                    f"{source}: rules[{i}].label names every label of task {task.name}, so it "
                    "would flag every text; name only the labels to flag"
                )
            index = [task.labels.index(x) for x in labels]
            self._rules.append((i, rule, task.name, index, labels))

    def apply(self, scores: Mapping[str, np.ndarray]) -> tuple[bool, list[Reason]]:
        """``(flagged, reasons)`` for one text, from its per-task probability vectors."""
        reasons = []
        for i, rule, task, index, labels in self._rules:
            score = float(np.asarray(scores[task], dtype=np.float64)[index].sum())
            if score >= rule.min_score * (1 - ROUNDING):
                reasons.append(
                    Reason(rule=i, task=task, labels=labels, score=score, min_score=rule.min_score)
                )
        return bool(reasons), reasons


#: how far below ``min_score``, relative to it, a sum of float32 probabilities may fall and
#: still fire: a few float32 units in the last place (each probability is rounded to 6e-8 at 1)
ROUNDING = 1e-6


def load_policy(path: Path, tasks: Sequence[Task]) -> Policy:
    """Read and check a policy file against the model's tasks (one-line errors)."""
    data = load_yaml_mapping(path, "policy", "`rules:`, a list of rules")
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise Hm3Error(f"{path}: {format_validation_error(exc, PolicyFile)}") from None
    return Policy(parsed.rules, tasks, str(path))
