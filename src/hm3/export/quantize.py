"""Dynamic int8 quantization of an exported graph, and how far its decisions follow the float one.

:func:`quantize_int8` applies ONNX Runtime's dynamic quantization to the encoder's linear
layers (int8 weights, activations quantized on the fly per batch; no calibration data). The
embedding tables stay float32: they are lookups, so int8 would save memory but no time, and it
changed more decisions on the demo model (docs/results/export-onnx.md); the head stays float32
too. Because activation scales are per batch, an int8 answer can depend slightly on which texts
share its batch. :func:`agreement` runs the float and the quantized graph on the same texts and
counts, per task, the texts whose decision (the most probable label) is the same, and the
largest probability difference. It decides nothing: the caller compares with its threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hm3.errors import Hm3Error
from hm3.export.fuse import needs_external_data
from hm3.export.runtime import OnnxClassifier
from hm3.io.texts import TextCount, TextFile, expected_texts, iter_text_batches
from hm3.options import named
from hm3.progress import progress_bar

QUANTIZE = ("int8",)
# the encoder's linear layers: plain products, and a fused Attention's query/key/value product
OP_TYPES = ("MatMul", "Attention")
_INT8_OPS = ("MatMulInteger", "QAttention")


def no_texts(texts: TextFile) -> Hm3Error:
    """The error for an int8 texts file whose every text is blank."""
    return Hm3Error(
        f"{texts.where}: no non-blank texts in column {texts.column!r}; give texts to compare "
        "the int8 model's decisions with the float model's"
    )


def check_quantize(value: str | None) -> str | None:
    """``None`` (float) or a supported quantization name."""
    if value is None or value in QUANTIZE:
        return value
    raise Hm3Error(f"{named(f'--quantize {value}', 'quantize', value)}: expected one of "
                   f"{', '.join(QUANTIZE)} (or leave it out)")  # fmt: skip


def quantize_int8(
    source: Path, dest: Path, *, per_channel: bool = True, reduce_range: bool = False
) -> int:
    """Write ``source`` with int8 encoder weights (ONNX Runtime's ``quantize_dynamic``).

    The encoder's linear layers (``MatMul`` on ``[batch, sequence, hidden]``, and the
    query/key/value product of a fused ``Attention``, :mod:`hm3.export.fuse`) are quantized;
    the head's (``Gemm`` on ``[batch, hidden]``: pooler, hidden head, label projection) stay
    float32, at no cost in time, since they decide the labels.

    Args:
        source: the float graph.
        dest: the quantized graph's file.
        per_channel: one scale per output channel of each weight instead of one per tensor.
        reduce_range: 7-bit weights (ONNX Runtime's advice for CPUs without VNNI).

    Returns:
        How many matrix products were quantized (a fused attention's counts as one).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = onnx.load(str(source), load_external_data=False).graph.node
    # the quantizer first rewrites a Gemm as `<name>_MatMul` + `<name>_Add`
    head = [f"{n.name}{suffix}" for n in nodes if n.op_type == "Gemm" for suffix in ("", "_MatMul")]
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its root-logger advice on pre-processing, each call
    try:
        quantize_dynamic(
            source,
            dest,
            op_types_to_quantize=list(OP_TYPES),
            nodes_to_exclude=head,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            use_external_data_format=needs_external_data(source),
            # ONNX's shape inference gives no type to a fused operator's outputs; ours are float32
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(previous)
    graph = onnx.load(str(dest), load_external_data=False).graph
    return sum(node.op_type in _INT8_OPS for node in graph.node)


@dataclass(frozen=True)
class TaskAgreement:
    """How one task's quantized decisions compare with the float model's."""

    task: str
    agreement: float
    max_abs_diff: float
    changed: int


@dataclass(frozen=True)
class Agreement:
    texts: int
    skipped: int
    tasks: tuple[TaskAgreement, ...]

    def below(self, minimum: float) -> list[TaskAgreement]:
        return [t for t in self.tasks if t.agreement < minimum]

    def record(self) -> dict:
        """The agreement as the ``onnx.agreement`` block of ``config.json``."""
        return {
            "texts": self.texts,
            "tasks": {
                t.task: {
                    "agreement": round(t.agreement, 6),
                    "changed": t.changed,
                    "max_abs_diff": round(t.max_abs_diff, 6),
                }
                for t in self.tasks
            },
        }


def agreement(
    reference: OnnxClassifier,
    candidate: OnnxClassifier,
    texts: TextFile,
    *,
    batch_size: int,
    max_texts: int | None = None,
    progress: bool = True,
) -> Agreement:
    """Per task, the share of ``texts`` on which ``candidate`` decides as ``reference`` does.

    Both models see the same batches; blank rows are skipped (and counted).
    """
    names = [t.name for t in reference.tasks]
    same = dict.fromkeys(names, 0)
    worst = dict.fromkeys(names, 0.0)
    count = TextCount()
    with progress_bar(progress) as bar:
        job = bar.add_task("int8 vs float", total=expected_texts(texts, max_texts))
        for batch in iter_text_batches(texts, batch_size, max_texts, count):
            ref = reference.predict_proba(batch, batch_size)
            got = candidate.predict_proba(batch, batch_size)
            for name in names:
                same[name] += int((ref[name].argmax(1) == got[name].argmax(1)).sum())
                worst[name] = max(worst[name], float(np.abs(ref[name] - got[name]).max()))
            bar.advance(job, len(batch))
    if count.texts == 0:
        raise no_texts(texts)
    tasks = tuple(
        TaskAgreement(n, same[n] / count.texts, worst[n], count.texts - same[n]) for n in names
    )
    return Agreement(count.texts, count.skipped, tasks)
