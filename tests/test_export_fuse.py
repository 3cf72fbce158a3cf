"""``hm3 export onnx`` fuses attention into ONNX Runtime's operators by default; ``--no-fuse`` not.

The model is a real TIES merge of the tiny BERT zoo, trained a little so that parity means
something (see ``test_export_onnx.merged``). Both graphs are run with plain onnxruntime on a
padded batch, against torch and against each other; the int8 export's record of what it fused
is checked against the operators its graph holds.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

import hm3
from hm3.errors import cli_spelling
from hm3.export.graph import export_graph, graph_inputs, output_names
from hm3.merging.config import MergeConfig
from test_export_onnx import ATOL, TEXTS, run_cli, session_outputs, texts_file


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="module")
def model(zoo_factory, tmp_path_factory, one_thread):
    zoo = zoo_factory("bert", train_steps=40)
    config = MergeConfig(
        base_model=str(zoo.base),
        merge_method="ties",
        models=[{"model": str(m)} for m in zoo.models],
    )
    out = tmp_path_factory.mktemp("fuse") / "m"
    return hm3.merge(config, out, progress=False).path


def operators(folder) -> Counter:
    graph = onnx.load(folder / "model.onnx").graph
    return Counter((node.domain or "ai.onnx", node.op_type) for node in graph.node)


def own(found: Counter) -> dict[str, int]:
    """ONNX Runtime's own operators (domain com.microsoft) among :func:`operators`'s."""
    return {op: n for (domain, op), n in sorted(found.items()) if domain == "com.microsoft"}


def test_default_fuses_attention_and_no_fuse_keeps_standard_operators(model, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", "onnx", model, "--out", tmp_path / "fused")
    assert code == 0, err
    assert "(float32, fused, opset" in err  # the success line says what kind of graph it wrote
    code, _, err = run_cli(
        capsys, "export", "onnx", model, "--out", tmp_path / "plain", "--no-fuse"
    )
    assert code == 0, err
    assert "(float32, standard ONNX, opset" in err
    fused, plain = operators(tmp_path / "fused"), operators(tmp_path / "plain")
    meta = json.loads((tmp_path / "fused" / "config.json").read_text())["onnx"]
    # two layers: one Attention each; the record is what the graph holds
    assert meta["fused"]["Attention"] == 2
    assert meta["fused"] == own(fused)
    assert not [p.name for p in (tmp_path / "fused").iterdir() if p.name.startswith(".")]
    assert fused["ai.onnx", "Softmax"] < plain["ai.onnx", "Softmax"]  # attention's went inside
    assert {domain for domain, _ in plain} == {"ai.onnx"}
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["onnx"]["fused"] is None
    assert "com.microsoft" in (tmp_path / "fused" / "README.md").read_text()
    assert "--no-fuse" in (tmp_path / "plain" / "README.md").read_text()
    # the same function: both against torch, on one padded batch (the mask inside Attention)
    clf = hm3.load(model)
    want = clf.logits(TEXTS)
    got_fused = session_outputs(tmp_path / "fused", TEXTS)
    got_plain = session_outputs(tmp_path / "plain", TEXTS)
    np.testing.assert_allclose(got_fused["logits"], want, atol=ATOL)
    np.testing.assert_allclose(got_plain["logits"], want, atol=ATOL)
    for task in clf.tasks:
        np.testing.assert_allclose(got_fused[task.name], got_plain[task.name], atol=ATOL)


@pytest.mark.parametrize("smooth", [False, True])
def test_int8_records_the_fusions_of_the_graph_it_quantized(model, tmp_path, capsys, smooth):
    argv = ["export", "onnx", model, "--out", tmp_path / "q", "--quantize", "int8"]
    argv += ["--texts", texts_file(tmp_path), "--min-agreement", "0", "--no-progress"]
    code, _, err = run_cli(capsys, *argv, "--smooth" if smooth else "--no-smooth")
    assert code == 0, err
    block = json.loads((tmp_path / "q" / "config.json").read_text())["onnx"]
    found = operators(tmp_path / "q")
    attention = found["com.microsoft", "QAttention"]
    assert block["fused"] == own(found)  # the int8 graph's: QAttention where attention fused
    assert found["ai.onnx", "MatMulInteger"] + attention == block["quantization"]["int8_matmuls"]
    assert block["quantization"]["op_types"] == ["MatMul", "Attention"]
    # smoothed or not: query, key and value in one int8 QAttention (the smoothing's Mul goes in
    # front of it, after the fusion); attention output, FFN in and out as products
    assert attention == 2 and found["ai.onnx", "MatMulInteger"] == 2 * 3
    assert block["fused"]["EmbedLayerNormalization"] == 1


def test_the_trace_uses_eager_attention_and_gives_the_model_back(model, tmp_path):
    clf = hm3.load(model)
    before = clf.model.config._attn_implementation
    assert before != "eager"  # transformers' default (sdpa): the switch is exercised
    seen = []
    hook = clf.model.register_forward_pre_hook(
        lambda module, args: seen.append(module.config._attn_implementation)
    )
    inputs = graph_inputs(clf.model.config.to_dict())
    names = list(output_names(clf.tasks))
    with torch.inference_mode(False):
        fused = export_graph(clf, tmp_path / "g.onnx", inputs=inputs, outputs=names, opset=17)
    hook.remove()
    assert seen and set(seen) == {"eager"}
    assert clf.model.config._attn_implementation == before
    assert fused and fused["Attention"] == 2
    assert (
        export_graph(clf, tmp_path / "p.onnx", inputs=inputs, outputs=names, opset=17, fuse=False)
        is None
    )


def test_a_roberta_export_records_only_onnx_runtime_operators(zoo_factory, tmp_path):
    """torch writes LayerNormalization itself (opset 17): a standard operator, not counted as
    fused, and not listed in the README as one that needs ONNX Runtime."""
    from hm3.export.api import export_onnx

    out = export_onnx(zoo_factory("roberta", bare=False).models[0], tmp_path / "r", progress=False)
    meta = json.loads((out.path / "config.json").read_text())["onnx"]
    found = operators(out.path)
    assert found["ai.onnx", "LayerNormalization"] >= 1 and "LayerNormalization" not in meta["fused"]
    assert meta["fused"] == own(found)
    intro = (out.path / "README.md").read_text().split("## Run it")[0]
    assert "SkipLayerNormalization" in intro and not re.search(
        r"(?<!Skip)LayerNormalization", intro
    )


def test_a_smoothed_graph_of_another_function_is_refused(model, tmp_path, monkeypatch):
    """The int8 graph is quantized from the smoothed graph, which must compute what the float
    graph does: checked on the probes like the float graph against torch, so that even
    ``--min-agreement 0`` cannot ship a smoothed graph that computes something else."""
    import hm3.export.api as api

    real = api.smooth_graph

    def broken(clf, batches, source, dest, **kwargs):
        written, record = real(clf, batches, source, dest, **kwargs)
        graph = onnx.load(written)
        for tensor in graph.graph.initializer:  # the smoothing's 1/s, doubled: another function
            if tensor.name.startswith("hm3_smooth_"):
                array = onnx.numpy_helper.to_array(tensor) * 2
                tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
        onnx.save(graph, written)
        return written, record

    monkeypatch.setattr(api, "smooth_graph", broken)
    texts = texts_file(tmp_path)
    with pytest.raises(RuntimeError, match="differ from the float graph's"):
        api.export_onnx(
            model, tmp_path / "q", quantize="int8", texts=texts, min_agreement=0, progress=False
        )
    assert not (tmp_path / "q").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "smooth, hint, keyword", [(False, "--smooth", "smooth=True"), (True, "--reduce-range",
                                                                   "reduce_range=True")]
)  # fmt: skip
def test_an_int8_refusal_names_the_worst_task_and_what_to_try(tmp_path, smooth, hint, keyword):
    from hm3.export.int8 import Int8Spec, refusal
    from hm3.export.quantize import Agreement, TaskAgreement

    texts = texts_file(tmp_path)
    spec = Int8Spec.checked(
        texts, "text", per_channel=True, reduce_range=False, min_agreement=0.99, max_texts=None,
        smooth=smooth,
    )  # fmt: skip
    tasks = (TaskAgreement("a", 0.985, 0.1, 3), TaskAgreement("b", 0.97, 0.2, 6))
    with cli_spelling():
        message = str(refusal(Agreement(200, 0, tasks), spec))
    assert "keeps only 0.9700 of b's decisions" in message and f"try {hint}," in message
    assert "(all: a 0.9850, b 0.9700; --min-agreement 0.99)" in message
    python = str(refusal(Agreement(200, 0, tasks), spec))  # as Python names them
    assert python.startswith("quantize='int8': keeps only") and f"try {keyword}," in python
    assert "min_agreement=0.99)" in python and "a lower min_agreement," in python
    assert "a 0.9850, b 0.9700" in message
    assert refusal(Agreement(200, 0, tasks[:1]), replace(spec, min_agreement=0.98)) is None
