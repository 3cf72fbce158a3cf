"""Smoothing before int8 (:mod:`hm3.export.smooth`): exact in float, on by default, recorded.

The models are the shared tiny zoo's classifiers of every family the exporter supports (random
weights, a tokenizer that sees words) and the tiny BERT TIES merge.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import hm3
from hm3.cli.app import main
from hm3.export.api import export_onnx
from hm3.export.fuse import own_operators
from hm3.export.runtime import OnnxClassifier
from hm3.export.smooth import DEFAULT_ALPHA, calibrate, smooth_graph
from hm3.export.smooth_onnx import factors
from tiny import FAMILIES, toy_texts

CALIBRATION = toy_texts(40, seed=3)
OTHER = [*toy_texts(7, seed=11), "good " * 40]


def batches(texts, size=16):
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def exported(model, folder):
    """A float export (fused, the default) of ``model``: its ``model.onnx``."""
    return export_onnx(model, folder, progress=False).path / "model.onnx"


def graph_logits(clf, file, texts):
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    graph = OnnxClassifier(session, clf.tokenizer, clf.tasks, file.parent, clf.max_length, {})
    return graph.logits(texts, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_smoothed_graph_has_the_same_logits(family, zoo_of, tmp_path, one_thread):
    model = zoo_of(family).models[0]
    clf, source = hm3.load(model), exported(model, tmp_path / "f")
    before = source.read_bytes()
    dest = tmp_path / "s.onnx"
    written, done = smooth_graph(clf, batches(CALIBRATION), source, dest, batch_size=16)
    assert done.skipped is None, done.skipped
    assert written == dest and done.layers > 0 and done.inputs <= done.layers
    assert done.texts == len(CALIBRATION) and done.alpha == DEFAULT_ALPHA
    assert source.read_bytes() == before  # the float graph is untouched
    muls = [n for n in onnx.load(dest).graph.node if n.name.startswith("/hm3/smooth_")]
    assert len(muls) == done.inputs and all(n.op_type == "Mul" for n in muls)
    want = graph_logits(clf, source, OTHER)
    np.testing.assert_allclose(graph_logits(clf, dest, OTHER), want, atol=1e-4)
    assert np.abs(want).max() > 1e-3  # logits that could differ
    # the fusions survive: what ONNX Runtime fused in the float graph is still there
    assert own_operators(dest) == own_operators(source)


def test_smoothing_divides_each_input_channel_by_its_factor(zoo_of, tmp_path, one_thread):
    """The fused attention reads its input times 1/s, and its query/key/value weight's rows are
    the float graph's times s, with s from the query, key and value layers' shared range."""
    model = zoo_of("bert").models[0]
    clf, source = hm3.load(model), exported(model, tmp_path / "f")
    ranges = calibrate(clf, batches(CALIBRATION), 16)
    qkv = [n for n in ranges.amax if ".layer.0.attention.self." in n]  # read one input
    assert sorted(n.rsplit(".", 1)[1] for n in qkv) == ["key", "query", "value"]
    assert all(torch.equal(ranges.amax[n], ranges.amax[qkv[0]]) for n in qkv)
    layers = dict(clf.model.named_modules())
    s = factors(ranges.amax[qkv[0]], [layers[n].weight for n in qkv], DEFAULT_ALPHA).numpy()
    assert s.max() / s.min() > 1.5  # the channels' ranges differ: s is not a constant
    dest = tmp_path / "s.onnx"
    smooth_graph(clf, batches(CALIBRATION), source, dest, batch_size=16)
    old, new = onnx.load(source).graph, onnx.load(dest).graph
    first = next(n for n in new.node if n.op_type == "Attention")
    made_by = {out: n for n in new.node for out in n.output}
    mul = made_by[first.input[0]]
    values = {t.name: numpy_helper.to_array(t) for t in new.initializer}
    np.testing.assert_allclose(values[mul.input[1]], 1 / s, rtol=1e-5)
    plain = next(n for n in old.node if n.op_type == "Attention")
    weight = {t.name: numpy_helper.to_array(t) for t in old.initializer}[plain.input[1]]
    np.testing.assert_allclose(values[first.input[1]], weight * s[:, None], rtol=1e-5)


def int8_export(capsys, model, out, texts, *flags):
    capsys.readouterr()
    argv = ["export", "onnx", model, "--out", out, "--quantize", "int8", "--texts", texts]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in [*argv, "--min-agreement", "0", "--no-progress", *flags]])
    assert exc.value.code == 0, capsys.readouterr().err
    return json.loads((out / "config.json").read_text())["onnx"]


def scaled_quantizer_inputs(folder) -> tuple[int, int]:
    """The int8 graph's activation quantizers: how many, and how many read a ``Mul``."""
    graph = onnx.load(folder / "model.onnx").graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    found = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    return len(found), sum(made_by.get(n.input[0]) == "Mul" for n in found)


def test_cli_smooths_by_default_records_it_and_no_smooth_turns_it_off(
    bert_ties_merged, tmp_path, capsys, one_thread
):
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in toy_texts(48, seed=7)))
    block = int8_export(capsys, bert_ties_merged, tmp_path / "s", texts, "--max-texts", "40")
    record = block["quantization"]["smoothing"]
    # 2 layers: query, key, value, attention output, FFN in, FFN out; 4 distinct inputs each
    assert record["layers"] == 12 and record["scaled_inputs"] == 8
    assert record["alpha"] == DEFAULT_ALPHA and record["calibration_texts"] == 40
    assert record["max_logit_diff_vs_unsmoothed"] <= 1e-4 and "skipped" not in record
    assert block["agreement"]["texts"] == 40
    assert scaled_quantizer_inputs(tmp_path / "s") == (8, 8)
    plain = int8_export(capsys, bert_ties_merged, tmp_path / "p", texts, "--no-smooth")
    assert plain["quantization"]["smoothing"] is None
    # unsmoothed, no quantizer reads a Mul (the GELU, which ends in one, is fused: BiasGelu)
    assert scaled_quantizer_inputs(tmp_path / "p") == (8, 0)
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]
