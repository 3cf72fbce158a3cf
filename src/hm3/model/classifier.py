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
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel

from hm3.errors import Hm3Error
from hm3.io.checkpoint import SAFE_INDEX, SAFE_SINGLE, Checkpoint
from hm3.io.tokenizer import has_tokenizer
from hm3.model.architectures import SUPPORTED
from hm3.model.labels import Task, tasks_from_config

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

    def encode(self, texts: Sequence[str]) -> Any:
        """One padded, truncated batch of ``texts`` on the model's device (a ``BatchEncoding``)."""
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)

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
                batch = self.encode([texts[i] for i in idx])
                out[idx] = self.model(**batch).logits.float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Per task, probabilities ``[len(texts), K_task]``: a softmax over its segment only."""
        return segment_softmax(self.logits(texts, batch_size), self.tasks)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """Per text (input order), per task: the most probable label and every label's score."""
        texts = _check_texts(texts)
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

    Raises:
        Hm3Error: a missing, truncated or headless checkpoint, or a bad device or dtype.
    """
    path = Path(path)
    if not path.is_dir():
        raise Hm3Error(f"{path}: model directory not found; check the path")
    dev = torch.device(check_device(device))
    if (dtype or "float32") not in _DTYPES:
        raise Hm3Error(f"dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
    config, tasks = _check_checkpoint(path, allow_pickle)
    model = _load_model(path, _DTYPES[dtype or "float32"]).eval().to(dev)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    positions = int(config.get("max_position_embeddings") or max_length)
    if config.get("model_type") in ("roberta", "xlm-roberta"):
        positions -= 2  # positions are offset by padding_idx + 1
    return Classifier(model, tokenizer, tasks, path, min(max_length, positions))


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_NO_HEAD_FIX = "point at a fine-tuned classifier (a *ForSequenceClassification directory)"


def check_device(device: str | None) -> str:
    """``cpu``/``cuda`` as given (checked), or CUDA when available for ``None``."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith(("cpu", "cuda")):
        raise Hm3Error(f"--device {device}: expected cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Hm3Error(f"--device {device}: CUDA is not available here; use --device cpu")
    return device


def _check_checkpoint(path: Path, allow_pickle: bool) -> tuple[dict, list[Task]]:
    """Read the config and the weights' headers as a merge does; refuse what cannot predict.

    Weights that are missing, pickled (without ``allow_pickle``) or truncated, a model of a
    known family without its label projection (a bare encoder), before transformers would fill
    the gaps with random values, and a model without tokenizer files are refused here.
    """
    with Checkpoint(path, allow_pickle=allow_pickle, role="model") as ckpt:
        tasks = tasks_from_config(ckpt.config, path.resolve().name, str(path))
        arch = SUPPORTED.get(str(ckpt.config.get("model_type", "")))
        if arch is not None:
            shapes = {name: info.shape for name, info in ckpt.tensors.items()}
            arch.check_head(shapes, tasks[-1].end, ckpt.label, _NO_HEAD_FIX)
    if not has_tokenizer(path):
        raise Hm3Error(
            f"{path}: no tokenizer files (tokenizer.json or vocab.txt); copy them from the "
            "base model"
        )
    return ckpt.config, tasks


def _load_model(path: Path, dtype: torch.dtype):
    """The transformers model; refused if any of its weights is missing from the checkpoint."""
    from transformers import AutoModelForSequenceClassification

    safe = (path / SAFE_SINGLE).is_file() or (path / SAFE_INDEX).is_file()
    with quiet_transformers(errors_only=False):
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path,
            dtype=dtype,
            use_safetensors=safe,
            trust_remote_code=False,
            output_loading_info=True,
        )
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise Hm3Error(
            f"model {path}: the checkpoint lacks {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}, which would be randomly initialised (no "
            f"classification head?); {_NO_HEAD_FIX}"
        )
    return model


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
    """The texts as a list (one string is one text); each must be a non-blank string."""
    out = [texts] if isinstance(texts, str) else list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise Hm3Error(f"texts[{i}]: expected a string, got {type(text).__name__}")
        if not text.strip():
            raise Hm3Error(
                f"texts[{i}]: empty text {text!r}; give every text at least one non-space "
                "character (drop the empty ones)"
            )
    return out
