"""SmoothQuant's scales written into an exported ONNX graph, after its fusion.

:func:`smooth_onnx_model` edits the float graph itself, so the smoothed graph keeps what ONNX
Runtime fused (one ``Attention`` per layer, :mod:`hm3.export.fuse`): tracing a smoothed copy of
the torch model instead put a ``Mul`` inside every attention, where the fusion no longer
recognised it. The graph's products with a constant weight, ``MatMul`` and a fused
``Attention`` (query, key and value side by side in one weight), are matched to the
classifier's linear layers by that weight: ONNX stores ``x Wᵀ``'s right operand as ``Wᵀ``, bit
for bit, so the calibration taken in torch (:func:`hm3.export.smooth.calibrate`) applies to it.
For each input tensor read by calibrated products, one ``Mul`` by ``1/s`` goes in front of them
and their weights' rows are multiplied by ``s`` (:func:`factors`): the same
function, up to float rounding. Products it cannot match (a weight two layers share, one read
elsewhere too, a layer without token vectors) stay as they are. It runs nothing.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hm3.export.fuse import OWN_DOMAIN

if TYPE_CHECKING:
    import torch

_FLOOR = 1e-5  # no factor, channel range or weight range below this (dead channels)


def factors(amax: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """``s_j = max|x_j|^α / max|W_:,j|^(1-α)`` with ``W`` the group's weights (torch layout,
    ``[out, in]``) stacked by rows: one factor per input channel ``j``."""
    import torch

    wmax = torch.cat([w.detach().abs().float() for w in weights], 0).amax(0)
    s = amax.clamp(min=_FLOOR).pow(alpha) / wmax.clamp(min=_FLOOR).pow(1 - alpha)
    return s.clamp(min=_FLOOR)


def smooth_onnx_model(
    model: Any,
    layers: Mapping[str, torch.nn.Linear],
    amax: Mapping[str, torch.Tensor],
    alpha: float,
) -> tuple[int, int]:
    """Smooth the ``onnx.ModelProto`` ``model`` in place.

    Args:
        model: the float graph (weights loaded).
        layers: the classifier's linear layers by name.
        amax: each calibrated layer's largest |input| per channel (layers that read token
            vectors only).
        alpha: the migration strength.

    Returns:
        The linear layers smoothed, and the ``Mul`` nodes inserted (one per distinct input).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    by_weight: dict[bytes, list[str]] = {}
    for name, layer in layers.items():
        if name in amax:
            by_weight.setdefault(_key(layer.weight.detach().float().numpy().T), []).append(name)
    reads = Counter(name for node in graph.node for name in node.input)
    groups: dict[str, list[tuple[Any, list[str]]]] = {}
    for node in graph.node:
        names = _layers_of(node, weights, by_weight, numpy_helper)
        if names and reads[node.input[1]] == 1:
            groups.setdefault(node.input[0], []).append((node, names))
    smoothed, before = 0, {}  # a Mul goes in front of its group's first node
    for k, (tensor, members) in enumerate(groups.items()):
        names = [name for _, group in members for name in group]
        peak = _stack_max([amax[name] for name in names])
        s = factors(peak, [layers[name].weight for name in names], alpha).numpy()
        for node, _ in members:
            array = numpy_helper.to_array(weights[node.input[1]]) * s[:, None]
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(array, node.input[1]))
        scale = f"hm3_smooth_{k}"
        graph.initializer.append(numpy_helper.from_array((1 / s).astype(np.float32), scale))
        out = f"{tensor}_hm3_smoothed"
        before[members[0][0].output[0]] = helper.make_node(
            "Mul", [tensor, scale], [out], name=f"/hm3/smooth_{k}/Mul"
        )
        for node, _ in members:
            node.input[0] = out
        smoothed += len(names)
    nodes = []
    for node in graph.node:  # in order: each group's first node is the first that reads it
        if node.output[0] in before:
            nodes.append(before[node.output[0]])
        nodes.append(copy.deepcopy(node))
    graph.ClearField("node")
    graph.node.extend(nodes)
    return smoothed, len(groups)


def _layers_of(node: Any, weights: dict, by_weight: dict, numpy_helper: Any) -> list[str] | None:
    """The linear layers whose weights ``node`` multiplies by, or ``None`` if not all known."""
    if len(node.input) < 2 or node.input[1] not in weights:
        return None
    if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
        parts = [numpy_helper.to_array(weights[node.input[1]])]
    elif node.op_type == "Attention" and node.domain == OWN_DOMAIN:
        parts = np.split(numpy_helper.to_array(weights[node.input[1]]), 3, axis=1)
    else:
        return None
    if any(p.ndim != 2 for p in parts):
        return None
    found = [by_weight.get(_key(p), []) for p in parts]
    if any(len(names) != 1 for names in found):  # unknown, or two layers with one weight
        return None
    return [names[0] for names in found]


def _key(array: np.ndarray) -> bytes:
    data = np.ascontiguousarray(array, dtype=np.float32)
    return hashlib.sha256(str(data.shape).encode() + data.tobytes()).digest()


def _stack_max(ranges: list[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.stack(ranges).amax(0)
