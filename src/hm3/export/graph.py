"""The ONNX graph of a classifier: its encoder, a softmax per task segment, one output per task.

:func:`output_names` turns task names into valid ONNX identifiers (C-style names, unique, none
equal to an input or to ``logits``) and keeps the mapping back to the task.
:func:`graph_inputs` decides which tokenizer outputs the graph takes: ``token_type_ids`` only
where the architecture has token types (``type_vocab_size > 1``).
:func:`export_graph` traces a loaded float32 classifier with torch's TorchScript ONNX exporter
(``dynamo=False``; it handles transformers' encoders without graph breaks) into one file whose
outputs are ``logits`` and the per-task probabilities (HM3, eq. 6, in the graph), with dynamic
batch and sequence axes, tracing transformers' eager attention (faster in ONNX Runtime than
the SDPA trace, and the pattern :mod:`hm3.export.fuse` recognises), then by default fuses it.
Nothing here quantizes, writes metadata files or runs the graph.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hm3.errors import Hm3Error
from hm3.export.fuse import fuse_graph
from hm3.export.runtime import LOGITS
from hm3.model.classifier import quiet_transformers
from hm3.model.labels import Task
from hm3.options import named

if TYPE_CHECKING:
    from hm3.model.classifier import Classifier

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# 14: the lowest opset torch exports transformers' attention to; 20: the TorchScript exporter's top
MIN_OPSET, MAX_OPSET = 14, 20
DEFAULT_OPSET = 17
_TRACE_DIR = ".trace"
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")
# two texts of different lengths: the traced batch is padded, so the mask path is exercised
_TRACE_TEXTS = ("hello world", "a longer text, so that the first one of the batch is padded")


def check_opset(opset: int) -> int:
    """``opset`` if the exporter and a dynamically quantized graph both support it."""
    if (
        isinstance(opset, bool)
        or not isinstance(opset, int)
        or not (MIN_OPSET <= opset <= MAX_OPSET)
    ):
        given = named(f"--opset {opset}", "opset", opset)
        raise Hm3Error(
            f"{given}: expected a whole number from {MIN_OPSET} to {MAX_OPSET} (the range "
            f"torch's ONNX exporter writes for these encoders; default {DEFAULT_OPSET})"
        )
    return opset


def graph_inputs(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The graph's inputs: ids and mask, plus ``token_type_ids`` where the model has types."""
    types = config.get("type_vocab_size")
    uses_types = isinstance(types, int) and types > 1
    return INPUTS if uses_types else INPUTS[:2]


def output_names(tasks: Sequence[Task]) -> dict[str, str]:
    """ONNX output name → task name, in task order.

    A task's name with every character outside ``[A-Za-z0-9_]`` replaced by ``_``, prefixed
    with ``task_`` when it would start with a digit or be empty, and suffixed ``_2``, ``_3``
    ... when it would repeat another output's or an input's name (``toxicity (en)`` →
    ``toxicity__en_``; a task called ``logits`` → ``logits_2``).
    """
    taken = {*INPUTS, LOGITS}
    out: dict[str, str] = {}
    for task in tasks:
        base = _NOT_IDENTIFIER.sub("_", task.name)
        if not base or base[0].isdigit():
            base = f"task_{base}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        out[name] = task.name
    return out


def export_graph(
    clf: Classifier,
    file: Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    opset: int,
    fuse: bool = True,
) -> dict[str, int] | None:
    """Trace ``clf`` (float32, on the CPU) into the ONNX file ``file``.

    Args:
        clf: the loaded classifier; its tasks give the softmax segments.
        file: where to write the graph (a model over 2 GB gets external data files beside it).
        inputs: the graph's input names (:func:`graph_inputs`).
        outputs: the per-task output names in task order (:func:`output_names`).
        opset: the ONNX opset (:func:`check_opset`).
        fuse: rewrite the trace with ONNX Runtime's fused operators (:mod:`hm3.export.fuse`).

    Returns:
        With ``fuse``, ONNX Runtime's own operators in the graph and their counts
        (:func:`hm3.export.fuse.own_operators`); otherwise ``None``.
    """
    module = _Probabilities(clf.model, [(t.start, t.end) for t in clf.tasks], inputs).eval()
    batch = clf.tokenizer(list(_TRACE_TEXTS), padding=True, return_tensors="pt")
    args = tuple(_ids(batch, name) for name in inputs)
    names = [LOGITS, *outputs]
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes |= {name: {0: "batch"} for name in names}
    # fused: traced into a folder of its own (a model over 2 GB writes a file per tensor there)
    trace = file.parent / _TRACE_DIR / file.name if fuse else file
    trace.parent.mkdir(exist_ok=True)
    with quiet_transformers(), warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape checks
        with _eager_attention(clf.model):
            torch.onnx.export(
                module,
                args,
                str(trace),
                input_names=list(inputs),
                output_names=names,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    if not fuse:
        return None
    try:
        return fuse_graph(trace, file, clf.model.config)
    finally:
        shutil.rmtree(trace.parent)


@contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """``model`` with transformers' eager attention for the trace, its own again after."""
    before = getattr(model.config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _ids(batch: Any, name: str) -> torch.Tensor:
    """One tokenizer output as int64; token types as zeros when the tokenizer gives none."""
    if name in batch:
        return batch[name].to(torch.int64)
    return torch.zeros_like(batch["input_ids"], dtype=torch.int64)


class _Probabilities(torch.nn.Module):
    """The classifier, then a softmax over each task's segment of its logits (HM3, eq. 6)."""

    def __init__(self, model: Any, segments: list[tuple[int, int]], inputs: Sequence[str]):
        super().__init__()
        self.model = model
        self.segments = segments
        self.names = tuple(inputs)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(**dict(zip(self.names, tensors, strict=True))).logits.float()
        probs = (torch.softmax(logits[:, start:end], dim=-1) for start, end in self.segments)
        return (logits, *probs)
