"""The int8 step of ``hm3 export onnx``: quantize the float export, compare, record or refuse.

:class:`Int8Spec` holds the user's choices, checked before any work (the texts, per-channel
scales, reduced range, smoothing, the agreement each task must keep). :func:`write_int8`
quantizes the float export's graph (or its smoothed twin, :mod:`hm3.export.smooth`) into the
output directory, runs both graphs on the texts
(:func:`hm3.export.quantize.agreement`), records the agreement in the ``onnx`` block and
refuses, with nothing written, when a task keeps fewer decisions than asked. Node names of the
parts that can stay in float come from the architecture table. It traces nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error, spell
from hm3.export import card
from hm3.export.fuse import own_operators
from hm3.export.quantize import OP_TYPES, Agreement, agreement, no_texts, quantize_int8
from hm3.export.runtime import MODEL_FILE, load_onnx
from hm3.io.texts import TextFile, iter_text_batches, open_texts
from hm3.io.tokenizer import copy_tokenizer
from hm3.model.labels import Task
from hm3.options import RunOptions, named, option_name

# the goal for a guard: at most 1 decision in 100 may change, per task
DEFAULT_MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class Int8Spec:
    """How to quantize and what the quantized graph must keep (``--quantize int8`` and friends)."""

    texts: TextFile
    per_channel: bool = True
    reduce_range: bool = False
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_texts: int | None = None
    smooth: bool = True

    @classmethod
    def checked(
        cls,
        texts: str | Path,
        text_column: str,
        *,
        per_channel: bool,
        reduce_range: bool,
        min_agreement: float,
        max_texts: int | None,
        smooth: bool = True,
    ) -> Int8Spec:
        """The spec, every value checked (the texts file read up to its first non-blank text)."""
        if not 0 <= min_agreement <= 1:
            given = named(f"--min-agreement {min_agreement}", "min_agreement", min_agreement)
            raise Hm3Error(f"{given}: expected a share from 0 to 1")
        if max_texts is not None and max_texts < 1:
            given = named(f"--max-texts {max_texts}", "max_texts", max_texts)
            raise Hm3Error(f"{given}: expected a whole number >= 1")
        options = ("--texts", option_name("--text-column"))
        where = named(f"--texts {texts}", "texts", texts)  # texts='t.jsonl' from Python
        opened = open_texts(texts, text_column, options=options, where=where)
        if next(iter_text_batches(opened, 1), None) is None:  # before minutes of export
            raise no_texts(opened)
        return cls(
            opened,
            bool(per_channel),
            bool(reduce_range),
            float(min_agreement),
            max_texts,
            bool(smooth),
        )


# each int8-only argument's default, and the option that sets another value
INT8_ONLY = {
    "texts": (None, "--texts"),
    "text_column": ("text", "--text-column"),
    "max_texts": (None, "--max-texts"),
    "per_channel": (True, "--per-tensor"),
    "reduce_range": (False, "--reduce-range"),
    "min_agreement": (DEFAULT_MIN_AGREEMENT, "--min-agreement"),
    "smooth": (True, "--no-smooth"),
}


QUANTIZE_INT8 = "quantize='int8'"


def refuse_int8_only(**given: Any) -> None:
    """Refuse, naming them all, the int8-only arguments that differ from their defaults."""
    changed = [spell(INT8_ONLY[k][1], k) for k, v in given.items() if v != INT8_ONLY[k][0]]
    if changed:
        names = ", ".join(changed)
        add = spell("--quantize int8", QUANTIZE_INT8)
        raise Hm3Error(f"{names}: only used with {add}; add {add} or drop {names}")


def write_int8(
    model: Path,
    tasks: list[Task],
    float_dir: Path,
    folder: Path,
    block: dict[str, Any],
    spec: Int8Spec,
    options: RunOptions,
    *,
    graph: Path | None = None,
    smoothing: dict[str, Any] | None = None,
) -> Agreement:
    """The int8 export in ``folder`` from the float one in ``float_dir``; ``block`` updated.

    ``graph`` is the float graph to quantize (default: ``float_dir``'s; a smoothed one has the
    same function) and ``smoothing`` its record; the decisions are compared with ``float_dir``'s.

    Raises:
        Hm3Error: a task's agreement below ``spec.min_agreement`` (the caller writes nothing).
    """
    products = quantize_int8(
        graph or float_dir / MODEL_FILE,
        folder / MODEL_FILE,
        per_channel=spec.per_channel,
        reduce_range=spec.reduce_range,
    )
    copy_tokenizer(model, folder)
    if block.get("fused") is not None:  # what the int8 graph holds: QAttention, not Attention
        block["fused"] = own_operators(folder / MODEL_FILE)
    block |= {
        "quantized": "int8",
        "quantization": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "QInt8",
            "op_types": list(OP_TYPES),
            "per_channel": spec.per_channel,
            "reduce_range": spec.reduce_range,
            "int8_matmuls": products,
            "smoothing": smoothing,
        },
    }
    card.write_config(model, tasks, folder, block)
    run = RunOptions(max_length=int(block["max_length"]))
    result = agreement(
        load_onnx(float_dir, options=run),
        load_onnx(folder, options=run),
        spec.texts,
        batch_size=options.batch_size,
        max_texts=spec.max_texts,
        progress=options.progress,
    )
    block["agreement"] = {"file": str(spec.texts.path), **result.record()}
    refused = refusal(result, spec)
    if refused is not None:
        raise refused
    return result


def refusal(result: Agreement, spec: Int8Spec) -> Hm3Error | None:
    """The error for an agreement below ``spec.min_agreement`` (naming the worst task and what
    to try), or ``None`` when every task keeps enough."""
    low = sorted(result.below(spec.min_agreement), key=lambda t: t.agreement)  # worst first
    if not low:
        return None
    shares = ", ".join(f"{t.task} {t.agreement:.4f}" for t in result.tasks)
    hint = spell("--smooth", "smooth=True") if not spec.smooth else (
        spell("--reduce-range", "reduce_range=True") if spec.per_channel else
        spell("--per-channel", "per_channel=True"))  # fmt: skip
    floor, least = option_name("--min-agreement"), spec.min_agreement
    return Hm3Error(
        f"{spell('--quantize int8', QUANTIZE_INT8)}: keeps only {low[0].agreement:.4f} of "
        f"{low[0].task}'s decisions on {spec.texts.path} (all: {shares}; "
        f"{named(f'--min-agreement {least}', 'min_agreement', least)}); nothing written; "
        f"try {hint}, accept it with a lower {floor}, or export float32"
    )
