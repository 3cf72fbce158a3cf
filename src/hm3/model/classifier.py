"""Inference with a merged (or an ordinary) classifier in torch (softmax per task segment).

:func:`load` opens any Hugging Face sequence classifier directory. A merged model's tasks come from
the ``hm3`` block of its ``config.json``; an ordinary classifier is one task named after its
directory. :class:`Classifier` is the torch runtime of :class:`~hm3.model.predictor.BasePredictor`,
which does the batching (sorted by length, padded per batch), the softmax per task, long texts in
windows and the result types (the public JSON schema of ``hm3 predict --json`` and of ``hm3
serve``); this module adds the forward pass, run under ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hm3.errors import Hm3Error
from hm3.io.checkpoint import SAFE_INDEX, SAFE_SINGLE, Checkpoint
from hm3.io.paths import as_path, dir_name
from hm3.io.tokenizer import has_tokenizer
from hm3.model.architectures import SUPPORTED
from hm3.model.labels import Task, tasks_from_config
from hm3.model.predictor import BasePredictor
from hm3.options import RunOptions, resolve_device, run_options, torch_dtype

__all__ = ["Classifier", "load", "quiet_transformers"]

log = logging.getLogger("hm3")


class Classifier(BasePredictor):
    """A loaded classifier with HM3 task segments, run by torch. Build it with :func:`load`."""

    def __init__(self, model, tokenizer, tasks: list[Task], path: Path, max_length: int) -> None:
        super().__init__(tokenizer, tasks, path, max_length)
        self.model = model

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

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        device = self.device
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
            return self.model(**inputs).logits.float().cpu().numpy()


_UNREAD = {
    "batch_size": "give it to each call: clf.predict(texts, batch_size=N)",
    "force": "loading writes nothing",
    "progress": "loading shows no progress",
}


def load(path: str | Path, *, options: RunOptions | None = None, **run: Any) -> Classifier:
    """Load a merged or ordinary sequence classifier directory for inference.

    Args:
        path: model directory (``config.json``, weights, tokenizer files).
        options: the run options (:class:`~hm3.options.RunOptions`); these are read:
            ``device`` (the device rule: ``cpu`` unless asked; ``cuda``, ``cuda:N``, ``auto``),
            ``dtype`` (``None`` keeps float32), ``max_length`` (texts are truncated to this many
            tokens, capped by the model's positions) and ``allow_pickle`` (accept pickled
            ``.bin`` weights, loaded with ``weights_only=True``).
        **run: run options by name, overriding ``options`` (``load(path, device="cuda")``);
            ``batch_size``, ``force`` and ``progress`` are not read, so refused here.

    Returns:
        A :class:`Classifier`.

    Raises:
        Hm3Error: a missing, truncated or headless checkpoint, or a bad device or dtype.
    """
    opts = run_options(options, run, unread=_UNREAD)
    path = as_path(path, "path")
    if not path.is_dir():
        raise Hm3Error(f"{path}: model directory not found; check the path")
    device = torch.device(resolve_device(opts.device))
    config, tasks = _check_checkpoint(path, opts.allow_pickle)
    model = _load_model(path, torch_dtype(opts.dtype)).eval().to(device)
    tokenizer = _load_tokenizer(path)
    return Classifier(model, tokenizer, tasks, path, usable_length(config, opts.max_length))


def usable_length(config: dict, asked: int) -> int:
    """Tokens per text a model of ``config`` reads when ``asked`` for that many: ``asked``,
    capped by the model's positions."""
    positions = int(config.get("max_position_embeddings") or asked)
    if config.get("model_type") in ("roberta", "xlm-roberta"):
        positions -= 2  # positions are offset by padding_idx + 1
    return min(asked, positions)


_NO_HEAD_FIX = "point at a fine-tuned classifier (a *ForSequenceClassification directory)"


def _check_checkpoint(path: Path, allow_pickle: bool) -> tuple[dict, list[Task]]:
    """Read the config and the weights' headers as a merge does; refuse what cannot predict.

    Weights that are missing, pickled (without ``allow_pickle``) or truncated, a model of a
    known family without its label projection (a bare encoder), before transformers would fill
    the gaps with random values, a ``config.json`` whose ``model_type`` transformers does not
    know, and a model without tokenizer files are refused here.
    """
    with Checkpoint(path, allow_pickle=allow_pickle, role="model") as ckpt:
        tasks = tasks_from_config(ckpt.config, dir_name(path), str(path))
        check_model_type(ckpt.config, str(path / "config.json"))
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


def check_model_type(config: dict, where: str) -> None:
    """Refuse a ``config.json`` (named ``where`` in the message) whose ``model_type`` is missing,
    unknown to the installed transformers, or without a sequence classifier there: transformers
    would raise a traceback instead. Imports no model code."""
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    model_type = config.get("model_type")
    if not model_type:
        raise Hm3Error(
            f"{where}: no model_type, so transformers cannot tell the architecture; add the base "
            'model\'s ("model_type": "bert", say)'
        )
    version = transformers.__version__
    fix = (
        "upgrade transformers if the model is newer (pip install -U transformers), else use a "
        "model of a supported family (bert, roberta, deberta ...)"
    )
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise Hm3Error(
            f"{where}: model_type {model_type!r} is not an architecture transformers {version} "
            f"knows; {fix}"
        )
    if CONFIG_MAPPING[model_type] not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise Hm3Error(
            f"{where}: model_type {model_type!r} has no sequence classifier in transformers "
            f"{version}; {fix}"
        )


def _load_tokenizer(path: Path):
    """The directory's tokenizer; files transformers cannot read are a user error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # the last three: a tokenizer.json that is JSON but not a tokenizer's (e.g. `{}`)
        first = (str(exc).strip().splitlines() or [""])[0]
        if not isinstance(exc, OSError | ValueError) or not first:
            first = f"{type(exc).__name__}: {first}".rstrip(": ")
        raise Hm3Error(
            f"{path}: its tokenizer cannot be loaded ({first}); copy the tokenizer files from "
            "the base model"
        ) from None


def _load_model(path: Path, dtype: torch.dtype):
    """The transformers model; refused if any of its weights is missing from the checkpoint."""
    from transformers import AutoModelForSequenceClassification

    safe = (path / SAFE_SINGLE).is_file() or (path / SAFE_INDEX).is_file()
    # transformers' own load report (a table on stderr) would precede our one-line refusal
    with quiet_transformers():
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
    unused = sorted(info.get("unexpected_keys") or ())
    if unused:
        log.warning("model %s: %d tensor(s) of the checkpoint are not used by %s (%s%s)",
                    path, len(unused), type(model).__name__, ", ".join(unused[:3]),
                    ", ..." if len(unused) > 3 else "")  # fmt: skip
    return model


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' load/save progress bars and its warnings (its errors still show)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
