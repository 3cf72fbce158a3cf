"""SmoothQuant-style smoothing of a classifier before dynamic int8 (an exact re-parametrisation).

Dynamic quantization gives each matrix product's input one scale per batch, so a few hidden
channels with a large range set a coarse int8 step for all of them. Smoothing (Xiao et al.
2022, SmoothQuant) moves that range into the weights: for a linear layer ``y = x Wᵀ`` it
picks per input channel ``j`` a factor ``s_j = max|x_j|^α / max|W_:,j|^(1-α)`` (``max|x_j|``
over calibration texts), multiplies the weight's columns by ``s`` and divides the input by
``s`` just before the product. The float function is unchanged (up to rounding).

SmoothQuant folds ``1/s`` into a preceding LayerNorm. In the post-LayerNorm encoders hm3
exports (BERT and its family) that LayerNorm's output is also the residual, so folding would
change the model; here the division is an explicit element-wise product (one ``Mul`` per
input) written into the exported graph in front of the products (:mod:`hm3.export.smooth_onnx`,
after ONNX Runtime's fusion, which it keeps), so it needs no knowledge of the wiring and works
for every layer, the FFN output projection included. Layers that read the same input tensor
(query, key and value) share one factor and one ``Mul``. Only layers that see token vectors
(``[batch, sequence, hidden]``, the ones :func:`hm3.export.quantize.quantize_int8` quantizes)
are smoothed; the head stays as it is.

:func:`smooth_graph` calibrates the torch model on the user's texts (:func:`calibrate`: each
linear layer's input range per channel), writes the smoothed float graph and checks that its
logits equal the unsmoothed graph's on the first batch; where they do not (or nothing can be
smoothed) it writes nothing and returns the reason, and the export quantizes the unsmoothed
graph.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hm3.export.smooth_onnx import smooth_onnx_model

if TYPE_CHECKING:
    from hm3.model.classifier import Classifier

log = logging.getLogger("hm3")

# migration strength: 0.8 kept the most decisions on the demo (docs/results/export-onnx.md)
DEFAULT_ALPHA = 0.8
EXACT_TOLERANCE = 1e-4  # |smoothed - original| on any logit of the check batch


@dataclass(frozen=True)
class Smoothing:
    """What :func:`smooth_graph` did.

    Attributes:
        alpha: the migration strength (0: nothing moves into the weights, 1: all of it).
        texts: calibration texts.
        layers: linear layers smoothed (0 when skipped).
        inputs: distinct scaled inputs (one ``Mul`` each in the graph).
        max_logit_diff: largest |smoothed − original| logit on the check batch.
        skipped: why the model was left unsmoothed (``None``: it was smoothed).
    """

    alpha: float
    texts: int
    layers: int
    inputs: int
    max_logit_diff: float | None
    skipped: str | None = None

    def record(self) -> dict[str, Any]:
        """The ``onnx.quantization.smoothing`` block of ``config.json``."""
        out: dict[str, Any] = {
            "method": "smoothquant, explicit input scale",
            "alpha": self.alpha,
            "calibration_texts": self.texts,
            "layers": self.layers,
            "scaled_inputs": self.inputs,
        }
        if self.max_logit_diff is not None:
            out["max_logit_diff_vs_unsmoothed"] = float(f"{self.max_logit_diff:.3g}")
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out


class _Ranges:
    """Per linear layer that reads token vectors, the largest |input| per channel."""

    def __init__(self) -> None:
        self.amax: dict[str, torch.Tensor] = {}

    def hook(self, name: str):
        def record(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if x.dim() < 3:
                return
            peak = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float()
            old = self.amax.get(name)
            self.amax[name] = peak if old is None else torch.maximum(old, peak)

        return record


def _linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def calibrate(clf: Classifier, batches: Iterable[Sequence[str]], batch_size: int) -> _Ranges:
    """Run ``clf`` on ``batches`` and record each linear layer's input range per channel."""
    layers = _linears(clf.model)
    ranges = _Ranges()
    handles = [m.register_forward_pre_hook(ranges.hook(n)) for n, m in layers.items()]
    try:
        for batch in batches:
            clf.logits(list(batch), batch_size)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def smooth_graph(
    clf: Classifier,
    batches: Iterable[Sequence[str]],
    source: Path,
    dest: Path,
    *,
    batch_size: int,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[Path | None, Smoothing]:
    """Write the graph ``source`` (exported from ``clf``) smoothed to ``dest``, and say what was
    done; ``None`` (nothing written) when skipped.

    Args:
        clf: the loaded float32 classifier ``source`` was exported from (left unchanged).
        batches: the calibration texts, in batches (the first one is also the check batch).
        source: the float graph (``model.onnx``).
        dest: where to write the smoothed graph (its folder exists).
        batch_size: texts per forward pass.
        alpha: the migration strength, from 0 to 1.
    """
    import onnx

    batches = [list(b) for b in batches]
    texts = sum(len(b) for b in batches)
    ranges = calibrate(clf, batches, batch_size)
    if not batches:
        return None, Smoothing(alpha, 0, 0, 0, None, "no calibration texts")
    model = onnx.load(str(source))
    layers, inputs = smooth_onnx_model(model, _linears(clf.model), ranges.amax, alpha)
    if not layers:
        reason = "no linear layer reads token vectors ([batch, sequence, hidden])"
        return None, Smoothing(alpha, texts, 0, 0, None, reason)
    large = model.ByteSize() >= 2**31 - 2**20  # a protobuf cannot hold 2 GB
    onnx.save(model, str(dest), save_as_external_data=large, location=f"{dest.name}.data")
    diff = _logit_diff(clf, source, dest, batches[0])
    if not diff <= EXACT_TOLERANCE:
        dest.unlink()
        reason = f"smoothing changed the float logits by {diff:.3g} (> {EXACT_TOLERANCE})"
        log.warning("int8 smoothing skipped: %s", reason)
        return None, Smoothing(alpha, texts, 0, 0, diff, reason)
    log.info("smoothed %d linear layers (%d inputs, alpha %.2g)", layers, inputs, alpha)
    return dest, Smoothing(alpha, texts, layers, inputs, diff)


def _logit_diff(clf: Classifier, source: Path, dest: Path, texts: Sequence[str]) -> float:
    """Largest |logit| difference between the graphs ``source`` and ``dest`` on ``texts``."""
    import onnxruntime as ort

    from hm3.export.runtime import OnnxClassifier

    found = []
    for file in (source, dest):
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        graph = OnnxClassifier(session, clf.tokenizer, clf.tasks, file.parent, clf.max_length, {})
        found.append(graph.logits(list(texts), len(texts)))
    return float(np.abs(found[0] - found[1]).max())
