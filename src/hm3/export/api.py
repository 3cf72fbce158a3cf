"""``hm3 export onnx``: a classifier directory → a self-contained ONNX Runtime directory.

:func:`export_onnx` checks every input before any work (classifier directory, architecture,
opset, quantization, the agreement texts, the output path), then builds the output in a
temporary sibling renamed into place only when complete (:func:`hm3.io.atomic.atomic_dir`):

1. the float graph (:mod:`hm3.export.graph`), the tokenizer files and ``config.json`` (the
   model's, with its ``hm3`` block and an ``onnx`` block), then a check that ONNX Runtime's
   probabilities on probe texts of other batch sizes and lengths equal torch's;
2. with ``quantize="int8"``, the int8 graph (:mod:`hm3.export.quantize`; by default of the
   float graph smoothed on the texts, :mod:`hm3.export.smooth`) replaces the float one,
   after its decisions were compared with the float graph's on the user's texts: a task
   below ``min_agreement`` stops the export and nothing is written;
3. a README on running the directory without hm3 (:mod:`hm3.export.card`).

It loads the model on the CPU (tracing is device independent) and runs no server.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hm3.errors import Hm3Error, spell
from hm3.export import card
from hm3.export.graph import (
    DEFAULT_OPSET,
    LOGITS,
    check_opset,
    export_graph,
    graph_inputs,
    output_names,
)
from hm3.export.int8 import DEFAULT_MIN_AGREEMENT, Int8Spec, refuse_int8_only, write_int8
from hm3.export.quantize import Agreement, check_quantize
from hm3.export.runtime import MODEL_FILE, load_onnx, require
from hm3.export.smooth import smooth_graph
from hm3.io.atomic import atomic_dir, check_output
from hm3.io.paths import as_path
from hm3.io.texts import iter_text_batches
from hm3.io.tokenizer import copy_tokenizer
from hm3.model.architectures import SUPPORTED
from hm3.model.classifier import Classifier, load
from hm3.model.predictor import BasePredictor
from hm3.options import RunOptions, named, run_options
from hm3.version import __version__

log = logging.getLogger("hm3")

CHECK_TOLERANCE = 1e-4  # |ONNX Runtime - torch| on any probability of the probe texts
_FLOAT_DIR = ".float"
_UNREAD = {
    "device": "an export is traced on the CPU; choose the device when it runs: load_onnx(DIR, "
    "device=...)",
    "dtype": "an export is float32, or int8 with quantize='int8'",
}
_SMOOTH_DIR = ".smoothed"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the export directory.
        outputs: ONNX output name → task name.
        opset: the graph's opset.
        quantize: ``None`` (float32) or ``"int8"``.
        check_diff: the float graph's largest |ONNX Runtime − torch| probability on the probes.
        agreement: int8 against float on the texts (``None`` for a float export).
        seconds: wall time.
        check: ``config.json``'s ``onnx.check`` (:func:`hm3.export.card.check_record`).
        fused: ONNX Runtime's own operators in the graph, operator → count (``{}``: nothing
            fused; ``None``: exported with ``fuse=False``), as ``config.json``'s ``onnx.fused``.
        max_length: the tokens per text the export serves up to (``onnx.max_length``).
    """

    path: Path
    outputs: dict[str, str]
    opset: int
    quantize: str | None
    check_diff: float
    agreement: Agreement | None
    seconds: float
    check: dict[str, float] = field(default_factory=dict)
    fused: dict[str, int] | None = None
    max_length: int = 0


def export_onnx(
    model: str | Path,
    out: str | Path,
    *,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    texts: str | Path | None = None,
    text_column: str = "text",
    max_texts: int | None = None,
    per_channel: bool = True,
    reduce_range: bool = False,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    smooth: bool = True,
    fuse: bool = True,
    options: RunOptions | None = None,
    **run: Any,
) -> ExportResult:
    """Export a merged (or ordinary) classifier directory to ONNX at ``out``.

    Args:
        model: the classifier directory (``config.json``, weights, tokenizer files).
        out: the output directory (refused if it exists, unless ``options.force``).
        quantize: ``None`` (float32) or ``"int8"`` (dynamic quantization; needs ``texts``).
        opset: ONNX opset, 14 to 20.
        texts: a .jsonl/.csv/.parquet file of texts on which int8 must agree with float.
        text_column: the column of ``texts`` that holds the texts.
        max_texts: compare on the first this many texts only.
        per_channel: int8 weight scales per output channel (default) instead of per tensor.
        reduce_range: 7-bit int8 weights (see :func:`hm3.export.quantize.quantize_int8`).
        min_agreement: each task's share of unchanged decisions the int8 graph must reach.
        smooth: quantize a copy smoothed on ``texts`` (the first ``max_texts``), which has the
            same float function and keeps more decisions (:mod:`hm3.export.smooth`).
        fuse: ONNX Runtime's fused attention and layer-norm operators (:mod:`hm3.export.fuse`;
            on long texts faster, less memory; ONNX Runtime only); ``False``: standard ONNX.
        options: ``max_length`` (recorded; capped by the model's positions), ``batch_size``,
            ``progress``, ``force``, ``allow_pickle``; or by name (``force=True``), overriding
            ``options``. Export runs on the CPU.

    Raises:
        Hm3Error: any bad input (before anything is written), or int8 below ``min_agreement``
            (nothing is written).
    """
    started = time.perf_counter()
    options = run_options(options, run, unread=_UNREAD)
    model, out = as_path(model, "model"), as_path(out, "out")
    if quantize is None:  # what only shapes an int8 export, given for a float one
        refuse_int8_only(texts=texts, text_column=text_column, max_texts=max_texts,
                         per_channel=per_channel, reduce_range=reduce_range,
                         min_agreement=min_agreement, smooth=smooth)  # fmt: skip
    _check_inputs(model, out, quantize, opset, texts, options)
    spec = None
    if quantize is not None:
        spec = Int8Spec.checked(
            texts,
            text_column,
            per_channel=per_channel,
            reduce_range=reduce_range,
            min_agreement=min_agreement,
            max_texts=max_texts,
            smooth=smooth,
        )
    clf = load(model, options=options.with_(device="cpu", dtype=None))
    outputs = output_names(clf.tasks)
    with atomic_dir(out, options.force) as tmp:
        diff, result, block = _write_export(clf, model, tmp, outputs, (opset, fuse), spec, options)
    seconds = time.perf_counter() - started
    return ExportResult(
        out, outputs, opset, quantize, diff, result, seconds, block["check"], block["fused"],
        block["max_length"],
    )  # fmt: skip


def _check_inputs(
    model: Path,
    out: Path,
    quantize: str | None,
    opset: int,
    texts: str | Path | None,
    options: RunOptions,
) -> None:
    """Every check that needs no model, in the order a user would fix them."""
    for module in ("onnx", "onnxruntime"):
        require(module)
    check_quantize(quantize)
    check_opset(opset)
    if quantize is not None and texts is None:
        raise Hm3Error(
            f"{named(f'--quantize {quantize}', 'quantize', quantize)}: needs "
            f"{spell('--texts FILE', 'texts=FILE')} (texts like the ones you will classify), on "
            "which the int8 model's decisions are compared with the float model's"
        )
    config = card.read_config(model)
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED:
        raise Hm3Error(
            f"{model}: model_type {model_type!r} cannot be exported to ONNX by hm3 (supported: "
            f"{', '.join(sorted(SUPPORTED))})"
        )
    inputs = [model, *([Path(texts)] if texts else [])]
    check_output(out, options.force, inputs=inputs)


def _write_export(
    clf: Classifier,
    model: Path,
    tmp: Path,
    outputs: dict[str, str],
    graph: tuple[int, bool],
    spec: Int8Spec | None,
    options: RunOptions,
) -> tuple[float, Agreement | None, dict[str, Any]]:
    """The export's files in ``tmp``: the float graph, checked against torch (and with ``spec``
    the int8 graph in its place), config.json and the README; the float graph's max |onnx -
    torch|, the int8 agreement and config.json's ``onnx`` block, whose ``check`` for int8 claims
    nothing within the float's tolerance. ``graph``: the opset, and whether to fuse."""
    float_dir = tmp if spec is None else tmp / _FLOAT_DIR
    float_dir.mkdir(exist_ok=True)
    log.info("tracing %s to ONNX (opset %d)", model, graph[0])
    block = _write_float(clf, model, float_dir, outputs, graph)
    diff = _check_float(clf, float_dir)
    log.info("the float graph equals torch within %.2g on the probe texts", diff)
    block["check"] = card.check_record(diff)
    result = None
    if spec is not None:
        twin, smoothing = _smoothed_graph(clf, float_dir, tmp / _SMOOTH_DIR, spec, options)
        if twin is not None:  # same function as the float graph: checked like it, on the probes
            copy_tokenizer(model, twin.parent)  # not the float graph's external data, if any
            shutil.copy2(float_dir / "config.json", twin.parent / "config.json")
            _check_float(load_onnx(float_dir), twin.parent, "the float graph")
        result = write_int8(
            model, clf.tasks, float_dir, tmp, block, spec, options, graph=twin, smoothing=smoothing
        )
        block["check"] = card.check_record(diff, block["agreement"])
        shutil.rmtree(float_dir)
        shutil.rmtree(tmp / _SMOOTH_DIR, ignore_errors=True)
    card.write_config(model, clf.tasks, tmp, block)
    (tmp / "README.md").write_text(card.readme(clf.tasks, block), encoding="utf-8")
    return diff, result, block


def _write_float(
    clf: Classifier, model: Path, folder: Path, outputs: dict[str, str], graph: tuple[int, bool]
) -> dict[str, Any]:
    """The float graph, tokenizer and config.json in ``folder``; returns the ``onnx`` block."""
    (opset, fuse), inputs = graph, graph_inputs(clf.model.config.to_dict())
    fused = export_graph(
        clf, folder / MODEL_FILE, inputs=inputs, outputs=list(outputs), opset=opset, fuse=fuse
    )
    copy_tokenizer(model, folder)
    block = {
        "file": MODEL_FILE,
        "opset": opset,
        "fused": fused,
        "inputs": list(inputs),
        "logits": LOGITS,
        "outputs": dict(outputs),
        "max_length": clf.max_length,
        "quantized": None,
        "exported_by": f"hm3 {__version__}",
    }
    card.write_config(model, clf.tasks, folder, block)
    return block


def _smoothed_graph(
    clf: Classifier, float_dir: Path, folder: Path, spec: Int8Spec, options: RunOptions
) -> tuple[Path | None, dict[str, Any] | None]:
    """With ``spec.smooth``, the float graph in ``float_dir`` smoothed on the int8 texts
    (:mod:`hm3.export.smooth`; ``None`` where smoothing was skipped) and the smoothing's record."""
    if not spec.smooth:
        return None, None
    batches = iter_text_batches(spec.texts, options.batch_size, spec.max_texts)
    folder.mkdir()
    graph, done = smooth_graph(
        clf, batches, float_dir / MODEL_FILE, folder / MODEL_FILE, batch_size=options.batch_size
    )
    return graph, done.record()


def _probes(max_length: int) -> list[str]:
    """Texts of other batch sizes and lengths than the trace's, one past the length limit."""
    return ["x", "hello world, again and again " * 3, "long " * (2 * max_length), "ok then"]


def _check_float(clf: BasePredictor, folder: Path, reference: str = "torch") -> float:
    """Largest |ONNX Runtime − ``clf``| probability on the probes; an error above the tolerance
    (``clf``: torch, or the float graph for its smoothed twin in ``folder``)."""
    onnx_clf = load_onnx(folder, options=RunOptions(max_length=clf.max_length))
    texts = _probes(clf.max_length)
    diffs = []
    for batch_size in (1, 3):
        ref = clf.predict_proba(texts, batch_size)
        got = onnx_clf.predict_proba(texts, batch_size)
        diffs += [float(np.abs(ref[t.name] - got[t.name]).max()) for t in clf.tasks]
    diff = max(diffs)
    if not diff <= CHECK_TOLERANCE:
        raise RuntimeError(
            f"the exported graph's probabilities differ from {reference}'s by {diff:.3g} (> "
            f"{CHECK_TOLERANCE}) on probe texts: the trace or its fusion does not compute the "
            "model's function on other shapes"
        )
    return diff
