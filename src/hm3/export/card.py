"""What an ONNX export says about itself: config.json, a README, metadata in ``model.onnx``.

:func:`read_config` reads the source model's ``config.json`` (refusing a directory without
one); :func:`write_config` writes it to the export with an ``hm3`` block (added for a plain
classifier, so its task keeps its name) and the ``onnx`` block, and stamps the graph.
:func:`readme` writes how to run the directory with plain onnxruntime (no hm3) and how to put
``model.onnx`` behind Triton's onnxruntime backend, with this model's own output names, label
counts and labels; :func:`check_record` and :func:`check_summary` state the export's check
(in ``config.json``, in words). :func:`stamp` stores the tasks and the output mapping in the
graph's ``metadata_props`` (key ``hm3``), so the ``.onnx`` file alone still says which output is
which task when it travels without ``config.json``. Nothing here runs a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error
from hm3.export.runtime import MODEL_FILE
from hm3.io import checkpoint
from hm3.model.labels import Task, metadata_block

_SNIPPET = """\
import json
import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

d = "{folder}"  # this directory
meta = json.load(open(f"{{d}}/config.json"))
tok = AutoTokenizer.from_pretrained(d)
session = ort.InferenceSession(f"{{d}}/model.onnx", providers=["CPUExecutionProvider"])
batch = tok(["some text to check"], padding=True, truncation=True,
            max_length=meta["onnx"]["max_length"], return_tensors="np")
feed = {{i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}}
names = list(meta["onnx"]["outputs"])  # output name -> task name
for name, probs in zip(names, session.run(names, feed)):
    task = next(t for t in meta["hm3"]["tasks"] if t["name"] == meta["onnx"]["outputs"][name])
    print(task["name"], {{label: round(float(p), 3) for label, p in zip(task["labels"], probs[0])}})
"""


def readme(tasks: list[Task], block: dict[str, Any]) -> str:
    """The export directory's README.md."""
    by_task = {task: name for name, task in block["outputs"].items()}
    rows = "\n".join(
        f"| `{by_task[t.name]}` | {t.name} | {t.size} | {', '.join(t.labels)} |" for t in tasks
    )
    quant = block.get("quantized")
    precision = (
        "int8 encoder weights by ONNX Runtime's dynamic quantization" if quant else "float32"
    )
    lines = [
        "# ONNX export of an hm3 classifier",
        "",
        f"`model.onnx` (opset {block['opset']}, {precision}) returns, for a batch of tokenized "
        "texts, the raw `logits` and one output per task holding that task's probabilities "
        "(a softmax over the task's own labels, as `hm3 predict` reports them).",
        "",
        f"Inputs (int64, shape [batch, sequence]): {', '.join(block['inputs'])}. Tokenize "
        f"with the tokenizer files here, truncating to {block['max_length']} tokens.",
        "",
        "| output | task | labels | label order |",
        "|---|---|---|---|",
        rows,
        "",
        f"`logits` has {tasks[-1].end} columns: the tasks' segments side by side in this order.",
        *_fused_lines(block),
        *_agreement_lines(block),
        *_check_lines(block),
        "",
        "## Run it with onnxruntime (no hm3 needed)",
        "",
        "```python",
        _SNIPPET.format(folder=".").rstrip(),
        "```",
        "",
        "With hm3: `hm3.export.runtime.load_onnx(DIR).predict(texts)`, or `hm3 serve DIR --onnx`.",
        "",
        "## Triton Inference Server (onnxruntime backend)",
        "",
        "Model repository layout: `models/hm3/config.pbtxt` and `models/hm3/1/model.onnx`;",
        "clients send token ids (tokenize with the files here). Triton's dynamic batcher joins",
        "requests of equal sequence length only: pad on the client to a few fixed lengths.",
        "",
        "```",
        triton_config(tasks, block).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def check_record(float_diff: float, agreement: dict[str, Any] | None = None) -> dict[str, float]:
    """The ``onnx.check`` block of ``config.json``: the float graph's largest |ONNX Runtime −
    torch| probability on the probe texts; for int8 (``agreement``: its ``onnx.agreement``
    block), named as the float graph's, since the int8 graph is not within it of torch, beside
    the int8 graph's own largest |int8 − float| probability on the agreement texts."""
    diff = float(f"{float_diff:.3g}")
    if agreement is None:
        return {"max_abs_diff_vs_torch": diff}
    worst = max(entry["max_abs_diff"] for entry in agreement["tasks"].values())
    return {"float_graph_max_abs_diff_vs_torch": diff, "int8_max_abs_diff_vs_float_graph": worst}


def check_summary(check: dict[str, float]) -> str:
    """:func:`check_record`'s block in words, as both the README and ``hm3 export onnx`` say it."""
    if "max_abs_diff_vs_torch" in check:
        return f"max |onnx - torch| {check['max_abs_diff_vs_torch']:.2g}"
    return (
        f"max |onnx - torch| {check['float_graph_max_abs_diff_vs_torch']:.2g} of the float32 "
        f"graph before quantization, int8 vs float32 max |Δp| "
        f"{check['int8_max_abs_diff_vs_float_graph']:.2g} on the agreement texts"
    )


def _check_lines(block: dict[str, Any]) -> list[str]:
    check = block.get("check")
    if not check:
        return []
    return ["", f"Largest probability differences when exported: {check_summary(check)}."]


def _fused_lines(block: dict[str, Any]) -> list[str]:
    fused = block.get("fused")
    if not fused:
        why = "exported with `--no-fuse`" if fused is None else "ONNX Runtime fused nothing"
        return ["", f"The graph uses standard ONNX operators only ({why})."]
    ops = ", ".join(f"{name} × {count}" for name, count in fused.items())
    return [
        "",
        f"The graph uses ONNX Runtime's fused operators (domain `com.microsoft`: {ops}): run it "
        "with ONNX Runtime (CPU or CUDA, or Triton's onnxruntime backend). For an engine that "
        "knows only standard ONNX operators, export again with `--no-fuse`.",
    ]


def _agreement_lines(block: dict[str, Any]) -> list[str]:
    found = block.get("agreement")
    if not found:
        return []
    shares = ", ".join(f"{task} {entry['agreement']:.4f}" for task, entry in found["tasks"].items())
    return [
        "",
        f"The int8 graph takes the float graph's decision on these shares of {found['texts']} "
        f"texts ({Path(found['file']).name}): {shares}. Its activations are quantized per "
        "batch, so a text's int8 probabilities depend slightly on the other texts of its batch "
        "(behind a batching server, on other requests'): a decision near a boundary can flip.",
    ]


def triton_config(tasks: list[Task], block: dict[str, Any], name: str = "hm3") -> str:
    """A Triton ``config.pbtxt`` for the graph: int64 inputs, one float output per task."""
    by_task = {task: output for output, task in block["outputs"].items()}
    inputs = ",\n".join(
        f'  {{ name: "{i}" data_type: TYPE_INT64 dims: [ -1 ] }}' for i in block["inputs"]
    )
    outputs = [f'  {{ name: "{block["logits"]}" data_type: TYPE_FP32 dims: [ {tasks[-1].end} ] }}']
    outputs += [
        f'  {{ name: "{by_task[t.name]}" data_type: TYPE_FP32 dims: [ {t.size} ] }}' for t in tasks
    ]
    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 64\n'
        f"input [\n{inputs}\n]\noutput [\n" + ",\n".join(outputs) + "\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 5000 }\n"
    )


def stamp(file: Path, tasks: list[Task], block: dict[str, Any]) -> None:
    """Store tasks, labels and the output mapping in ``file``'s ``metadata_props`` (key ``hm3``)."""
    import onnx

    graph = onnx.load(str(file), load_external_data=False)
    meta = {
        "tasks": [{"name": t.name, "labels": list(t.labels)} for t in tasks],
        "outputs": block["outputs"],
        "logits": block["logits"],
        "max_length": block["max_length"],
        "quantized": block.get("quantized"),
    }
    props = {p.key: p.value for p in graph.metadata_props if p.key != "hm3"}
    props["hm3"] = json.dumps(meta, ensure_ascii=False)
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(file))


def read_config(model: Path) -> dict[str, Any]:
    """A classifier directory's ``config.json`` as a dict (read by
    :func:`hm3.io.checkpoint.read_config`), with the export's message where there is none."""
    if not (model / "config.json").is_file():
        raise Hm3Error(
            f"{model}: not a classifier directory (no config.json); give a merged or fine-tuned "
            "classifier directory"
        )
    return checkpoint.read_config(model, str(model))


def write_config(model: Path, tasks: list[Task], folder: Path, block: dict[str, Any]) -> None:
    """``folder/config.json``: the model's, with ``hm3`` and ``onnx`` blocks; the graph stamped."""
    config = read_config(model)
    config.setdefault("hm3", metadata_block(tasks, {}))
    config["onnx"] = block
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    (folder / "config.json").write_text(text, encoding="utf-8")
    stamp(folder / MODEL_FILE, tasks, block)
