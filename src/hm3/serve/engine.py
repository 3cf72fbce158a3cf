"""The model behind the server: token counts, scores for a list of texts, the model's facts.

:class:`Engine` wraps a loaded predictor — a torch :class:`~hm3.model.classifier.Classifier` or
the ONNX Runtime predictor of :mod:`hm3.export.runtime` — and is called from one worker thread
only (the batcher's), so the model is never run by two threads at once. Token counts come from
the model's own tokenizer and may be computed on other threads (fast tokenizers are
thread-safe). What it does not: batch requests, validate them or format answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hm3.errors import Hm3Error
from hm3.model.classifier import segment_softmax
from hm3.model.labels import Task
from hm3.options import RunOptions

log = logging.getLogger("hm3")

WARM_UP_TEXTS = ("warm up", "a longer text that warms up the model before the first request")


@dataclass(frozen=True)
class Scores:
    """One forward batch's answers: per task probabilities ``[n, K_task]``; logits if known."""

    probs: dict[str, np.ndarray]
    logits: np.ndarray | None

    def rows(self, lo: int, hi: int) -> Scores:
        probs = {name: p[lo:hi] for name, p in self.probs.items()}
        return Scores(probs, None if self.logits is None else self.logits[lo:hi])


class Engine:
    """A predictor with what the server needs of it. Build it with :func:`load_engine`."""

    def __init__(
        self, predictor: Any, path: Path, *, kind: str, options: RunOptions, budget: int
    ) -> None:
        self.predictor = predictor
        self.path = path
        self.kind = kind
        self.options = options
        self.budget = budget
        self.tasks: list[Task] = list(predictor.tasks)
        self.tokenizer = getattr(predictor, "tokenizer", None) or _tokenizer(path)
        self.max_length = int(getattr(predictor, "max_length", None) or options.max_length)
        self.has_logits = callable(getattr(predictor, "logits", None))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the model will see it (special tokens included, truncated)."""
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [len(ids) for ids in enc["input_ids"]]

    def infer(self, texts: Sequence[str], longest: int) -> Scores:
        """Scores of ``texts`` in input order; forward passes hold at most the token budget."""
        per_pass = max(1, min(self.options.batch_size, self.budget // max(1, longest)))
        if self.has_logits:
            logits = self.predictor.logits(texts, batch_size=per_pass)
            return Scores(segment_softmax(logits, self.tasks), logits)
        probs = self.predictor.predict_proba(texts, batch_size=per_pass)
        return Scores({t.name: np.asarray(probs[t.name]) for t in self.tasks}, None)

    def warm_up(self) -> None:
        """Run the model once so the first request does not pay for lazy initialisation."""
        texts = list(WARM_UP_TEXTS)
        self.infer(texts, max(self.count_tokens(texts)))

    def describe(self) -> dict[str, Any]:
        """Tasks, labels and the merge recipe (the ``hm3`` block of ``config.json``)."""
        block = _hm3_block(self.path)
        return {
            "model": self.path.name,
            "runtime": self.kind,
            "max_length": self.max_length,
            "tasks": [{"name": t.name, "labels": list(t.labels)} for t in self.tasks],
            "recipe": block.get("merge"),
            "align": block.get("align"),
        }


def load_engine(path: Path, *, onnx: bool, options: RunOptions, budget: int) -> Engine:
    """Load the model (torch, or ONNX Runtime with ``onnx``) on the options' device.

    Raises:
        Hm3Error: what the loader refuses, or ``--onnx`` before ``hm3 export onnx`` exists.
    """
    if onnx:
        try:
            from hm3.export.runtime import load_onnx
        except ImportError:
            raise Hm3Error(
                "--onnx: this hm3 has no ONNX runtime (hm3.export.runtime); serve the torch "
                "model without --onnx"
            ) from None
        predictor = load_onnx(path, options=options)
        return Engine(predictor, Path(path), kind="onnxruntime", options=options, budget=budget)
    from hm3.model.classifier import load

    predictor = load(path, options=options)
    return Engine(predictor, Path(path), kind="torch", options=options, budget=budget)


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def _hm3_block(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    block = config.get("hm3") if isinstance(config, dict) else None
    return block if isinstance(block, dict) else {}
