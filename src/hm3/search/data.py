"""What a search scores on: fixed seeded samples, tokenised once, and the two objectives.

- :func:`sample_suite`: each dataset of a suite (as :func:`hm3.evaluation.suite.load_datasets`
  reads it) shuffled once by ``seed``; a sample takes ``n`` rows from a position of that order,
  so the validation rows and a test sample drawn from the same suite never overlap.
- :class:`Bank`: the distinct texts of a sample, tokenised once in batches of similar length
  (each padded only to its own longest text) and grouped in :data:`SLICES` stages: stage ``s``
  holds the rows whose position in their dataset's sample falls in its ``s``-th slice, so a
  pruner can score a trial on the first slices before paying for the rest.
- :func:`f1_scores`: the evaluation stage's metrics (:func:`hm3.evaluation.scoring.score_model`:
  per-task macro-F1 pooled over the datasets that expect the task, and their average).
- :func:`agreement_scores`: the label-free objective: per task, the share of texts on which the
  merge's decision equals its original's, and the mean of ``1 − total variation`` between their
  probability vectors (segment softmax).

It runs models only through :meth:`Bank.run` and writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hm3.errors import Hm3Error
from hm3.evaluation.expectations import check_expectations
from hm3.evaluation.scoring import score_model
from hm3.evaluation.suite import Dataset, Suite, load_datasets
from hm3.model.classifier import Classifier
from hm3.model.labels import Task
from hm3.model.predictor import segment_softmax

#: slices of the validation sample a pruned search scores one after another (8: a trial far
#: behind stops after an eighth; 11 % fewer seconds per trial than 4, docs/results/search.md)
SLICES = 8


@dataclass
class Bank:
    """Distinct texts, tokenised once, in length-sorted batches: each lies in one stage when
    the bank is ``staged`` (a pruned search scores it stage by stage); otherwise batches are
    sorted by length across stages (less padding) and labelled with their last stage, so only
    a run of every stage reads them all."""

    texts: list[str]
    stage: np.ndarray  # per text: the earliest stage that needs it
    batches: list[tuple[int, np.ndarray, Any]]  # (stage, text indices, encoding on device)

    @classmethod
    def build(
        cls, clf: Classifier, texts: list[str], stage: np.ndarray, batch_size: int,
        staged: bool = True,
    ) -> Bank:  # fmt: skip
        cut = stage if staged else np.zeros_like(stage)
        order = sorted(range(len(texts)), key=lambda i: (int(cut[i]), len(texts[i])))
        batches = []
        lo = 0
        while lo < len(order):
            hi = lo
            while hi < len(order) and hi - lo < batch_size and cut[order[hi]] == cut[order[lo]]:
                hi += 1
            idx = np.asarray(order[lo:hi], dtype=np.int64)
            batches.append((int(stage[idx].max()), idx, clf.encode([texts[i] for i in idx])))
            lo = hi
        return cls(texts, stage, batches)

    def run(self, model: torch.nn.Module, out: np.ndarray, stages: Sequence[int]) -> None:
        """Fill ``out[i]`` with the logits of every text of ``stages``."""
        wanted = set(stages)
        with torch.inference_mode():
            for s, idx, enc in self.batches:
                if s in wanted:
                    out[idx] = model(**enc).logits.float().cpu().numpy()


def sample_suite(suite: Suite, tasks: Sequence[Task], n: int, seed: int, skip: int = 0) -> list:
    """``n`` rows per dataset (fewer where it has fewer), after ``skip`` rows of its seeded
    order; datasets are restricted to ``tasks`` (each must be expected by some dataset), and
    every expected label of every row is checked against the tasks' labels."""
    fix = "name each model's task as the suite does (`name:` in the merge YAML, --self TASK=MODEL)"
    restricted = suite.restricted([t.name for t in tasks], fix)
    datasets = load_datasets(restricted)
    check_expectations(datasets, {t.name: t.labels for t in tasks})
    out = []
    for i, data in enumerate(datasets):
        order = np.random.default_rng([seed, i]).permutation(len(data.texts))[skip : skip + n]
        if len(order) == 0:
            raise Hm3Error(
                f"dataset {data.name!r} ({data.path}): its {len(data.texts)} rows are all in the "
                "validation sample; give --test-suite, or a smaller --val-samples"
            )
        out.append(_rows(data, order))
    return out


def _rows(data: Dataset, order: np.ndarray) -> Dataset:
    return dataclasses.replace(
        data,
        texts=tuple(data.texts[i] for i in order),
        expected={t: tuple(v[i] for i in order) for t, v in data.expected.items()},
        row_ids=tuple(data.row_ids[i] for i in order),
    )


@dataclass
class Labelled:
    """A labelled sample: its datasets, each row's text in the bank and its stage."""

    datasets: list[Dataset]
    bank: Bank
    rows: list[np.ndarray]  # per dataset: each row's text index in the bank
    stages: list[np.ndarray]  # per dataset: each row's stage

    @classmethod
    def build(
        cls, clf: Classifier, datasets: list[Dataset], tasks: Sequence[Task], batch_size: int,
        staged: bool = True,
    ) -> Labelled:  # fmt: skip
        check_expectations(datasets, {t.name: t.labels for t in tasks})
        index: dict[str, int] = {}
        first: dict[str, int] = {}
        rows, stages = [], []
        for data in datasets:
            n = len(data.texts)
            st = (np.arange(n) * SLICES) // max(n, 1)
            ids = np.empty(n, dtype=np.int64)
            for j, text in enumerate(data.texts):
                k = index.setdefault(text, len(index))
                first[text] = min(first.get(text, SLICES), int(st[j]))
                ids[j] = k
            rows.append(ids)
            stages.append(st)
        texts = list(index)
        stage = np.asarray([first[t] for t in texts], dtype=np.int64)
        return cls(datasets, Bank.build(clf, texts, stage, batch_size, staged), rows, stages)


def f1_scores(
    sample: Labelled, logits: np.ndarray, tasks: Sequence[Task], stage: int = SLICES - 1
) -> tuple[dict[str, float], float]:
    """Per-task macro-F1 and their average on the rows of stages ``<= stage``."""
    cut, preds = [], {}
    for data, rows, st in zip(sample.datasets, sample.rows, sample.stages, strict=True):
        keep = np.flatnonzero(st <= stage)
        if len(keep) == 0:
            continue
        part = _rows(data, keep)
        cut.append(part)
        for task in tasks:
            if task.name in data.expected:
                seg = logits[rows[keep], task.start : task.end]
                preds[("m", task.name, data.name)] = np.asarray(task.labels, object)[
                    seg.argmax(axis=1)
                ]
    names = {t.name: "" for t in tasks}
    result = score_model("m", names, cut, {t.name: t.labels for t in tasks}, preds)
    per_task = {r.task: r.f1 for r in result.tasks}
    return per_task, float(result.average_f1 or 0.0)


@dataclass
class Unlabelled:
    """Unlabeled texts with the originals' logits on them (merged layout)."""

    bank: Bank
    originals: np.ndarray  # [n, K]


def agreement_scores(
    sample: Unlabelled, logits: np.ndarray, tasks: Sequence[Task], stage: int = SLICES - 1
) -> tuple[dict[str, float], dict[str, float]]:
    """Per task: decision agreement with the original, and mean ``1 − TV`` of probabilities."""
    keep = np.flatnonzero(sample.bank.stage <= stage)
    mine = segment_softmax(logits[keep], list(tasks))
    theirs = segment_softmax(sample.originals[keep], list(tasks))
    agree, similar = {}, {}
    for task in tasks:
        p, q = mine[task.name], theirs[task.name]
        agree[task.name] = float((p.argmax(axis=1) == q.argmax(axis=1)).mean())
        similar[task.name] = float(1.0 - 0.5 * np.abs(p - q).sum(axis=1).mean())
    return agree, similar
