"""Run an ``hm3 export onnx`` directory with ONNX Runtime, like the torch ``Classifier``.

:func:`load_onnx` opens the directory (``model.onnx``, tokenizer files, ``config.json`` with
the ``hm3`` and ``onnx`` blocks) and returns an :class:`OnnxClassifier`: a
:class:`~hm3.model.predictor.BasePredictor` whose forward pass is an ONNX Runtime session, so
it has the torch classifier's interface and behaviour (``tasks``, ``path``, ``tokenizer``,
``max_length``, ``logits``, ``predict_proba``, ``predict``, long texts in windows) for serving,
benchmarking and evaluation. It reads the graph's ``logits`` output, from which the base class
takes the softmax per task segment exactly as for torch (the graph's per-task outputs, the same
probabilities, are for engines without hm3). Devices follow the device rule: the CPU unless
asked; ``cuda[:N]`` needs onnxruntime's CUDA provider. This module exports nothing and needs no
torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hm3.errors import Hm3Error
from hm3.io.paths import as_path, dir_name
from hm3.io.tokenizer import has_tokenizer
from hm3.model.labels import Task, tasks_from_config
from hm3.model.predictor import BasePredictor
from hm3.options import RunOptions, named, option_name, run_options

MODEL_FILE = "model.onnx"
LOGITS = "logits"
CUDA_PROVIDER = "CUDAExecutionProvider"


class OnnxClassifier(BasePredictor):
    """An exported classifier in an ONNX Runtime session. Build it with :func:`load_onnx`.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        outputs: task name → the graph's output name for that task's probabilities.
        inputs: the graph's input names (``token_type_ids`` only where the model has types).
        precision: what the export stores its encoder weights in (``float32`` or ``int8``).
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        tasks: list[Task],
        path: Path,
        max_length: int,
        outputs: dict[str, str],
        precision: str = "float32",
    ) -> None:
        super().__init__(tokenizer, tasks, path, max_length)
        self.session = session
        self.outputs = outputs
        self.precision = precision
        self.inputs = tuple(i.name for i in session.get_inputs())

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        ids = batch["input_ids"]
        feed = {
            name: batch[name].astype(np.int64) if name in batch else np.zeros_like(ids)
            for name in self.inputs
        }
        return self.session.run([LOGITS], feed)[0].astype(np.float32, copy=False)


def read_export(path: Path) -> tuple[dict[str, Any], dict[str, Any], list[Task]]:
    """``config.json``, its ``onnx`` block and the tasks of an export directory (checked)."""
    path = Path(path)
    fix = "export the model into a new directory with `hm3 export onnx MODEL --out NEW_DIR`"
    if not path.is_dir():
        raise Hm3Error(f"{path}: directory not found; give an ONNX export directory, or {fix}")
    missing = [name for name in ("config.json", MODEL_FILE) if not (path / name).is_file()]
    if missing:
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            out = f"{path.resolve()}-onnx"
            fix = f"it holds a torch model: export it with `hm3 export onnx {path} --out {out}`"
        raise Hm3Error(f"{path}: not an ONNX export (no {' and no '.join(missing)}); {fix}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Hm3Error(f"{path}/config.json: unreadable ({exc}); {fix}") from None
    block = config.get("onnx") if isinstance(config, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("outputs"), dict):
        raise Hm3Error(f"{path}: config.json has no onnx block (not written by hm3); {fix}")
    tasks = tasks_from_config(config, dir_name(path), str(path))
    missing = sorted({t.name for t in tasks} - set(block["outputs"].values()))
    if missing:
        raise Hm3Error(f"{path}: the onnx block maps no output to task {missing[0]!r}; {fix}")
    if not has_tokenizer(path):  # transformers would build a 5-token vocabulary and go on
        raise Hm3Error(f"{path}: no tokenizer files (tokenizer.json or vocab.txt); copy them from "
                       f"the exported model, or {fix}")  # fmt: skip
    return config, block, tasks


def require(module: str) -> Any:
    """Import one of the ``export`` extra's packages, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise Hm3Error(
            f"{module} is not installed; install the export extra: pip install 'hm3[export]'"
        ) from None


def providers(device: str) -> list[Any]:
    """ONNX Runtime execution providers for a device under the device rule."""
    import onnxruntime as ort

    name = (device or "cpu").strip().lower()
    has_cuda = CUDA_PROVIDER in ort.get_available_providers()
    if name == "auto":
        name = "cuda" if has_cuda else "cpu"
    if name == "cpu":
        return ["CPUExecutionProvider"]
    if not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise Hm3Error(f"--device {device}: expected cpu, cuda, cuda:N or auto")
    if not has_cuda:
        raise Hm3Error(
            f"--device {device}: this onnxruntime has no CUDA provider; install onnxruntime-gpu "
            "or use --device cpu"
        )
    device_id = int(name[5:]) if ":" in name else 0
    return [(CUDA_PROVIDER, {"device_id": device_id}), "CPUExecutionProvider"]


def load_onnx(
    path: str | Path,
    *,
    options: RunOptions | None = None,
    threads: int | None = None,
    **run: Any,
) -> OnnxClassifier:
    """Open an ``hm3 export onnx`` directory for inference with ONNX Runtime.

    Args:
        path: the export directory.
        options: device (``cpu`` by default; ``cuda[:N]`` needs onnxruntime-gpu) and
            ``max_length`` (capped by the length the graph was exported at, ``hm3 export onnx
            --max-length``, recorded in ``config.json``); ``dtype`` must be
            ``None`` or float32 (an export runs in the precision it was written in); the rest
            is unused.
        threads: intra-op threads of the session (``None``: ONNX Runtime's default, one per
            physical core).
        **run: run options by name, overriding ``options`` (``load_onnx(d, device="cuda")``).

    Raises:
        Hm3Error: not an export directory, a missing output, an unavailable device, or a
            dtype other than float32.
    """
    ort = require("onnxruntime")
    from transformers import AutoTokenizer

    options = run_options(options, run)
    if options.dtype not in (None, "float32"):
        given = named(f"--dtype {options.dtype}", "dtype", options.dtype)
        raise Hm3Error(
            f"{given}: an ONNX export runs in the precision "
            "it was written in (float32, or int8 with hm3 export onnx --quantize int8); drop "
            f"{option_name('--dtype')} or run the torch model"
        )
    path = as_path(path, "path")
    _, block, tasks = read_export(path)
    if threads is not None and (type(threads) is not int or threads < 1):
        raise Hm3Error(f"threads {threads}: expected a whole number >= 1 (or None: all cores)")
    session_options = ort.SessionOptions()
    if threads is not None:
        session_options.intra_op_num_threads = threads
    chosen = providers(options.device)
    try:
        session = ort.InferenceSession(
            str(path / MODEL_FILE), sess_options=session_options, providers=chosen
        )
    except Exception as exc:  # onnxruntime's own types: InvalidProtobuf, Fail, InvalidGraph...
        detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        raise Hm3Error(
            f"{path}/{MODEL_FILE}: ONNX Runtime cannot load it ({detail}); export the model "
            "again with `hm3 export onnx`"
        ) from None
    outputs = {task: name for name, task in block["outputs"].items()}
    graph_outputs = {o.name for o in session.get_outputs()}
    absent = [n for n in [LOGITS, *outputs.values()] if n not in graph_outputs]
    if absent:
        raise Hm3Error(f"{path}/{MODEL_FILE}: has no output {absent[0]!r}; export it again")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    max_length = min(options.max_length, int(block.get("max_length") or options.max_length))
    precision = str(block.get("quantized") or "float32")
    return OnnxClassifier(session, tokenizer, tasks, path, max_length, outputs, precision)
