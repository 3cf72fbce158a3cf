"""Inference shared by every runtime: batching, softmax per task segment, long texts, the schema.

:class:`BasePredictor` does everything but the forward pass: it tokenizes the texts (truncated to
``max_length`` tokens, or cut into overlapping windows with :class:`~hm3.model.windows.Windows`),
sorts them by length so each batch is padded only to its own longest text, pads each batch
itself (as the tokenizer would), hands it to the one abstract method :meth:`BasePredictor._forward`
and puts the rows back in input order. Probabilities are a softmax over each task's segment of
the logits (HM3, eq. 6), never normalised across tasks. A runtime subclasses it with a forward:
:class:`hm3.model.classifier.Classifier` (torch), the ONNX Runtime predictor of ``hm3.export``.

The result types (:class:`Prediction` ...) are the public JSON schema of ``hm3 predict --json``
and of the server. This module loads nothing and imports no torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from hm3.errors import Hm3Error, spell
from hm3.io.texts import NOT_UNICODE, is_blank, lone_surrogate
from hm3.model.labels import Task
from hm3.model.windows import Windows, combine, content_step
from hm3.options import named, whole_number

# What the tokenizer returns besides model inputs; never passed to a forward.
_NOT_INPUTS = ("overflow_to_sample_mapping", "offset_mapping", "special_tokens_mask", "length")


class TaskPrediction(BaseModel):
    label: str
    scores: dict[str, float]


class Prediction(BaseModel):
    tasks: dict[str, TaskPrediction]


class PredictResponse(BaseModel):
    results: list[Prediction]


class Predictor(Protocol):
    """What evaluation needs of a model: its tasks, where it is from, and logits for texts.

    A :class:`BasePredictor` is one; wrappers that cache or share work (the demo's) are others.
    """

    tasks: list[Task]
    path: Path

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


class BasePredictor(ABC):
    """A classifier with HM3 task segments, whatever runs its forward pass.

    Attributes:
        tasks: the tasks, each with its segment ``[start, end)`` of the logits.
        path: the model directory.
        tokenizer: a Hugging Face (fast) tokenizer.
        max_length: tokens per text (or per window), special tokens included.
    """

    def __init__(self, tokenizer: Any, tasks: list[Task], path: Path, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.path = path
        self.max_length = max_length

    @abstractmethod
    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Scores ``[B, K]`` (float32) for one padded batch of int64 arrays ``[B, L]``
        (``input_ids``, ``attention_mask`` and, where the tokenizer makes them,
        ``token_type_ids``). A segment softmax of each row must give the task probabilities:
        logits, or per-segment log-probabilities."""

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits ``[len(texts), K]`` in input order (float32), texts truncated."""
        return Scoring(self, texts, batch_size).run().logits()

    def predict_proba(
        self, texts: Sequence[str], batch_size: int = 32, windows: Windows | None = None
    ) -> dict[str, np.ndarray]:
        """Per task, probabilities ``[len(texts), K_task]``: a softmax over its segment only.

        With ``windows``, a text longer than ``max_length`` tokens is scored in overlapping
        windows (batched with the other texts) and combined per task
        (:func:`hm3.model.windows.combine`); without, it is truncated. A text that fits gets the
        same answer either way.
        """
        return Scoring(self, texts, batch_size, windows).run().probs()

    def predict(
        self, texts: Sequence[str], batch_size: int = 32, windows: Windows | None = None
    ) -> list[Prediction]:
        """Per text (input order), per task: the most probable label and every label's score."""
        texts = check_texts(texts)
        probs = self.predict_proba(texts, batch_size, windows)
        results = []
        for row in range(len(texts)):
            tasks = {}
            for task in self.tasks:
                p = probs[task.name][row]
                tasks[task.name] = TaskPrediction(
                    label=task.labels[int(p.argmax())],
                    scores={label: float(v) for label, v in zip(task.labels, p, strict=True)},
                )
            results.append(Prediction(tasks=tasks))
        return results

    def window_counts(self, texts: Sequence[str], windows: Windows) -> list[int]:
        """How many windows each text takes (1: it fits in ``max_length`` tokens)."""
        check_windows(windows)
        _, owner = self.encode_units(check_texts(texts), windows)
        return np.bincount(owner, minlength=len(texts)).tolist()

    def encode_units(
        self, texts: list[str], windows: Windows | None
    ) -> tuple[dict[str, list[list[int]]], np.ndarray]:
        """Token rows (special tokens included, unpadded) and the text each row belongs to.

        Without ``windows`` each text is one row, truncated to ``max_length`` tokens; with them a
        long text is several rows, in order (the tokenizer's overflow, whose ``stride`` is the
        overlap: the window's content minus our step). No texts: no rows.
        """
        if not texts:  # the tokenizer fails on an empty list
            return {}, np.zeros(0, dtype=np.int64)
        extra: dict[str, Any] = {}
        special = self.tokenizer.num_special_tokens_to_add(pair=False)
        if windows is None and self.max_length <= special:  # the tokenizer would not truncate
            where = named(f"--max-length {self.max_length}", "max_length", self.max_length)
            raise Hm3Error(
                f"{where}: too small to read any text ({special} special tokens); give at least "
                f"{special + 1}"
            )
        if windows is not None:
            content, step = content_step(self.max_length, special, windows.stride)
            extra = {"stride": content - step, "return_overflowing_tokens": True}
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, **extra)
        owner = np.arange(len(texts))
        if windows is not None:
            if "overflow_to_sample_mapping" not in enc:
                off = spell("--no-windows", "windows=None")
                raise Hm3Error(
                    f"model {self.path}: its tokenizer ({type(self.tokenizer).__name__}) cannot "
                    f"cut texts into windows (no fast tokenizer); use {off}"
                )
            owner = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
        rows = {k: list(v) for k, v in enc.items() if k not in _NOT_INPUTS}
        return rows, owner

    def pad(self, rows: dict[str, list[list[int]]]) -> dict[str, np.ndarray]:
        """One batch as int64 arrays ``[B, longest]``, padded as the tokenizer pads."""
        lengths = [len(r) for r in rows["input_ids"]]
        width = max(lengths)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None and min(lengths) < width:
            raise Hm3Error(
                f"model {self.path}: its tokenizer has no padding token; use "
                f"{spell('--batch-size 1', 'batch_size=1')}"
            )
        values = {
            "input_ids": pad_id or 0,
            "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0),
        }
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = {}
        for key, seqs in rows.items():
            arr = np.full((len(seqs), width), values.get(key, 0), dtype=np.int64)
            for i, seq in enumerate(seqs):
                if left:
                    arr[i, width - len(seq) :] = seq
                else:
                    arr[i, : len(seq)] = seq
            out[key] = arr
        return out


class Scoring:
    """One call's texts scored one forward pass at a time: :meth:`step` runs the next pass, so
    a caller (the server's batcher) can run other calls' passes in between; :meth:`run` runs
    them all. Rows (texts, or windows of long texts) are sorted by their text's length
    (stable) into passes of ``batch_size`` rows."""

    def __init__(
        self,
        predictor: BasePredictor,
        texts: Sequence[str],
        batch_size: int,
        windows: Windows | None = None,
    ) -> None:
        self.texts = check_texts(texts)
        check_batch_size(batch_size)
        check_windows(windows)
        self.predictor, self.windows, self.batch_size = predictor, windows, batch_size
        self._rows, self._owner = predictor.encode_units(self.texts, windows)
        keys = [len(self.texts[i]) for i in self._owner]
        self._order = sorted(range(len(keys)), key=keys.__getitem__)
        self._out = np.zeros((len(keys), predictor.tasks[-1].end), dtype=np.float32)
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._order)

    def step(self) -> None:
        """Run the next forward pass (none left: nothing)."""
        idx = self._order[self._next : self._next + self.batch_size]
        self._next += len(idx)
        if idx:
            batch = self.predictor.pad({k: [v[i] for i in idx] for k, v in self._rows.items()})
            self._out[idx] = self.predictor._forward(batch)

    def run(self) -> Scoring:
        while not self.done:
            self.step()
        return self

    def logits(self) -> np.ndarray:
        """Logits ``[rows, K]`` in row order (one row per text without windows)."""
        return self._out

    def probs(self) -> dict[str, np.ndarray]:
        """Per task, probabilities ``[len(texts), K_task]`` (windows combined per text)."""
        probs = segment_softmax(self._out, self.predictor.tasks)
        if self.windows is None or not self.texts:
            return probs
        return combine(probs, self._owner, len(self.texts), self.predictor.tasks, self.windows)


def segment_softmax(logits: np.ndarray, tasks: list[Task]) -> dict[str, np.ndarray]:
    """Softmax applied to each task's segment separately (HM3, eq. 6)."""
    out = {}
    for task in tasks:
        seg = logits[:, task.start : task.end].astype(np.float64)
        seg = np.exp(seg - seg.max(axis=1, keepdims=True))
        out[task.name] = (seg / seg.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def check_batch_size(batch_size: int) -> None:
    whole_number(batch_size, "batch_size", spell(" (--batch-size N)", ""))


def check_windows(windows: Windows | None) -> None:
    """Refuse ``windows`` that is neither ``None`` nor a :class:`Windows` (a dict, say)."""
    if windows is not None and not isinstance(windows, Windows):
        raise Hm3Error(
            f"windows: expected a hm3.Windows or None, got "
            f"{type(windows).__name__}; pass one: Windows(stride=128)"
        )


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list (one string is one text); each must be a non-blank string."""
    if isinstance(texts, bytes | bytearray) or not isinstance(texts, str | Iterable):
        raise Hm3Error(f"texts: expected a string or a list of strings, got "
                       f"{type(texts).__name__}")  # fmt: skip
    out = [texts] if isinstance(texts, str) else list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise Hm3Error(f"texts[{i}]: expected a string, got {type(text).__name__}")
        if is_blank(text):
            raise Hm3Error(
                f"texts[{i}]: empty text {text!r}; give every text at least one visible "
                "character (drop the empty ones)"
            )
        at = lone_surrogate(text)
        if at is not None:
            raise Hm3Error(f"texts[{i}]: {NOT_UNICODE.format(at=at)}; give UTF-8 text")
    return out
