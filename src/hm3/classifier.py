"""Inference with a merged (or an ordinary) classifier: softmax per task segment (HM3, eq. 6).

:func:`load` opens any Hugging Face sequence classifier directory. A merged model's tasks come
from the ``hm3`` block of its ``config.json``; an ordinary classifier is one task named after
its directory. :meth:`Classifier.predict` returns, per text and per task, the winning label
and the task's label→probability mapping; probabilities are never normalised across tasks.
Texts are batched, sorted by length so each batch is padded only to its own longest text, and
run under ``torch.inference_mode``. The result types are the public JSON schema of
``hm3 predict --json`` (and of the server).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from pydantic import BaseModel

from hm3.checkpoint import PICKLE_INDEX, PICKLE_SINGLE, SAFE_INDEX, SAFE_SINGLE, read_config
from hm3.errors import Hm3Error
from hm3.labels import Task, tasks_from_config
from hm3.tokenizer_files import has_tokenizer

log = logging.getLogger("hm3")


class TaskPrediction(BaseModel):
    label: str
    scores: dict[str, float]


class Prediction(BaseModel):
    tasks: dict[str, TaskPrediction]


class PredictResponse(BaseModel):
    results: list[Prediction]


class Predictor(Protocol):
    """What evaluation needs of a model: its tasks, where it is from, and logits for texts.

    :class:`Classifier` is one; wrappers that cache or share work (the demo's) are others.
    """

    tasks: list[Task]
    path: Path

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


class Classifier:
    """A loaded classifier with HM3 task segments. Build it with :func:`load`."""

    def __init__(self, model, tokenizer, tasks: list[Task], path: Path, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.path = path
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits ``[len(texts), K]`` in input order (float32)."""
        texts = _check_texts(texts)
        if batch_size < 1:
            raise Hm3Error(f"batch_size: expected a positive integer, got {batch_size}")
        out = np.zeros((len(texts), self.tasks[-1].end), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                idx = order[lo : lo + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                out[idx] = self.model(**batch).logits.float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Per task, probabilities ``[len(texts), K_task]``: a softmax over its segment only."""
        return segment_softmax(self.logits(texts, batch_size), self.tasks)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """Per text (input order), per task: the most probable label and every label's score."""
        probs = self.predict_proba(texts, batch_size)
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


def segment_softmax(logits: np.ndarray, tasks: list[Task]) -> dict[str, np.ndarray]:
    """Softmax applied to each task's segment separately (HM3, eq. 6)."""
    out = {}
    for task in tasks:
        seg = logits[:, task.start : task.end].astype(np.float64)
        seg = np.exp(seg - seg.max(axis=1, keepdims=True))
        out[task.name] = (seg / seg.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def load(
    path: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    max_length: int = 512,
    allow_pickle: bool = False,
) -> Classifier:
    """Load a merged or ordinary sequence classifier directory for inference.

    Args:
        path: model directory (``config.json``, weights, tokenizer files).
        device: ``cpu``, ``cuda`` or ``None`` (CUDA when available).
        dtype: ``float32``, ``float16`` or ``bfloat16``; ``None`` keeps float32.
        max_length: texts are truncated to this many tokens (capped by the model's positions).
        allow_pickle: accept pickled ``.bin`` weights (loaded with ``weights_only=True``).

    Returns:
        A :class:`Classifier`.
    """
    path = Path(path)
    if not path.is_dir():
        raise Hm3Error(f"{path}: model directory not found; check the path")
    config = read_config(path, str(path))
    tasks = tasks_from_config(config, path.resolve().name, str(path))
    safe = (path / SAFE_SINGLE).is_file() or (path / SAFE_INDEX).is_file()
    pickled = (path / PICKLE_SINGLE).is_file() or (path / PICKLE_INDEX).is_file()
    if not safe and pickled and not allow_pickle:
        raise Hm3Error(
            f"{path}: weights are pickled ({PICKLE_SINGLE}) and pickles can run code; convert "
            "them to safetensors, or pass --allow-pickle"
        )
    if not safe and not pickled:
        raise Hm3Error(f"{path}: no weights found (expected {SAFE_SINGLE})")
    if not has_tokenizer(path):
        raise Hm3Error(
            f"{path}: no tokenizer files (tokenizer.json or vocab.txt); copy them from the "
            "base model"
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        dtype or "float32"
    ]
    with quiet_transformers(errors_only=False):
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=safe, trust_remote_code=False
        )
    model.eval().to(dev)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    positions = int(config.get("max_position_embeddings") or max_length)
    if config.get("model_type") in ("roberta", "xlm-roberta"):
        positions -= 2  # positions are offset by padding_idx + 1
    return Classifier(model, tokenizer, tasks, path, min(max_length, positions))


@contextmanager
def quiet_transformers(*, errors_only: bool = True) -> Iterator[None]:
    """Hide transformers' load/save progress bars (and, with ``errors_only``, its warnings)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if errors_only:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    out = list(texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise Hm3Error(f"texts[{bad[0]}]: expected a string, got {type(out[bad[0]]).__name__}")
    return out
