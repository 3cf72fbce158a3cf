"""RegMean's statistics: each model's Gram matrices of its linear layers' inputs, on its texts.

For every model of a ``merge_method: regmean`` recipe, in config order, :func:`collect` loads
the classifier, runs its texts through it (streamed batch by batch) and records, with a forward
hook on every ``torch.nn.Linear`` except the label projection, ``G = Σ x xᵀ / m`` over the ``m``
input rows that layer saw: every non-padding token for the encoder's layers, one row per text
for pooler-like layers, and any other input it is called on (DeBERTa runs its relative-position
embeddings through the attention projections: those rows count too, as in its forward pass).
Each model's terms go into one :class:`~hm3.methods.regmean.RegMeanSums` per weight before the
next model is loaded, so memory is one model's Gram matrices plus the
sums, whatever the number of models. The label projection is left to the merge (HM3-expanded
and averaged: each task keeps its own rows, scaled by w_i / Σ w).

It merges nothing (``merging.py`` solves the sums) and opens no text file itself (the recipe
checks them first, :mod:`hm3.io.texts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hm3.errors import Hm3Error
from hm3.io.checkpoint import read_config
from hm3.io.texts import TextCount, TextFile, expected_texts, iter_text_batches, sha256_file
from hm3.methods.regmean import DEFAULT_REGMEAN_TEXTS, RegMeanSums
from hm3.model.classifier import Classifier, load
from hm3.model.features import find_projection
from hm3.options import RunOptions
from hm3.progress import progress_bar


@dataclass(frozen=True)
class ModelTexts:
    """One model of the merge and the texts its Gram matrices are computed on."""

    name: str  # the task name (for messages and metadata)
    path: str  # the model directory
    weight: float
    texts: TextFile


@dataclass
class RegMeanStats:
    """The summed statistics of every linear weight, and what they were computed on."""

    sums: dict[str, RegMeanSums]
    max_length: int
    max_texts: int | None
    models: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The ``hm3.merge.regmean`` metadata (texts, their sha256 and count per model)."""
        return {
            "gram": "X^T X / rows, over the non-padding inputs of every Linear but the head",
            "max_length": self.max_length,
            "max_texts": self.max_texts,
            "linear_weights": len(self.sums),
            "models": self.models,
        }


def collect(
    models: Sequence[ModelTexts],
    options: RunOptions,
    *,
    max_texts: int | None = DEFAULT_REGMEAN_TEXTS,
) -> RegMeanStats:
    """Run each model over its texts and sum its RegMean terms into one set of sums.

    Args:
        models: the merged models in config order, each with its weight and its texts.
        options: how to run them (:class:`~hm3.options.RunOptions`): ``device``,
            ``batch_size``, ``max_length`` (texts are truncated to this many tokens),
            ``allow_pickle`` and ``progress`` (a bar per model); ``dtype`` is not read: the
            models run in float32 and the Gram matrices are summed in float64.
        max_texts: use at most the first this many texts of each model's file.

    Returns:
        A :class:`RegMeanStats`; raises :class:`Hm3Error` for a text file with no texts, or
        models whose linear layers differ.
    """
    options = options.with_(dtype=None)
    stats = RegMeanStats({}, options.max_length, max_texts)
    for entry in models:
        clf = load(entry.path, options=options)
        layers = _linear_layers(clf, entry.path)
        grams, count = _grams(clf, layers, entry, max_texts, options)
        _add_terms(stats, layers, entry, grams)
        stats.models.append(
            {
                "name": entry.name,
                "texts": str(Path(entry.texts.path).resolve()),
                "texts_sha256": sha256_file(entry.texts.path),
                "n_texts": count.texts,
                "skipped_rows": count.skipped,
            }
        )
        del clf, layers, grams
    return stats


def _linear_layers(clf: Classifier, source: str) -> dict[str, torch.nn.Linear]:
    head = find_projection(clf, read_config(clf.path, source), source).module
    return {
        name: module
        for name, module in clf.model.named_modules()
        if isinstance(module, torch.nn.Linear) and name != head
    }


def _grams(
    clf: Classifier,
    layers: dict[str, torch.nn.Linear],
    entry: ModelTexts,
    max_texts: int | None,
    options: RunOptions,
) -> tuple[dict[str, tuple[torch.Tensor, int]], TextCount]:
    grams = {
        n: torch.zeros(m.in_features, m.in_features, dtype=torch.float64, device=clf.device)
        for n, m in layers.items()
    }
    rows = dict.fromkeys(layers, 0)
    mask: list[torch.Tensor] = []  # the current batch's attention mask

    def hook(name: str):
        def record(_module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
            x = args[0]
            if x.ndim == 3 and x.shape[:2] == mask[0].shape:
                x = x[mask[0]]  # non-padding tokens only
            x = x.reshape(-1, x.shape[-1]).double()
            grams[name].addmm_(x.T, x)
            rows[name] += x.shape[0]

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    count = TextCount()
    try:
        with progress_bar(options.progress) as bar, torch.inference_mode():
            total = expected_texts(entry.texts, max_texts)
            job = bar.add_task(f"regmean: {entry.name} texts", total=total)
            for batch in iter_text_batches(entry.texts, options.batch_size, max_texts, count):
                enc = clf.encode(batch)
                mask[:] = [enc["attention_mask"].bool()]
                clf.model(**enc)
                bar.advance(job, len(batch))
    finally:
        for handle in handles:
            handle.remove()
    if count.texts == 0:
        raise Hm3Error(
            f"{entry.texts.where}: no texts in column {entry.texts.column!r} for model "
            f"{entry.name} ({count.skipped} blank rows); give a file of unlabeled texts"
        )
    return {n: (grams[n], rows[n]) for n in layers if rows[n]}, count  # layers the pass used


def _add_terms(
    stats: RegMeanStats,
    layers: dict[str, torch.nn.Linear],
    entry: ModelTexts,
    grams: dict[str, tuple[torch.Tensor, int]],
) -> None:
    names = {f"{name}.weight": name for name in layers if name in grams}
    if stats.sums and set(names) != set(stats.sums):
        other = sorted(set(names) ^ set(stats.sums))
        raise Hm3Error(
            f"{entry.path}: its linear layers differ from the first model's (e.g. {other[0]}); "
            "regmean merges models of one architecture"
        )
    for tensor, name in names.items():
        weight = layers[name].weight.detach()
        gram, rows = grams[name]
        if tensor not in stats.sums:
            stats.sums[tensor] = RegMeanSums.zeros(*weight.shape, device=weight.device)
        stats.sums[tensor].add(weight, gram / rows, entry.weight)
