"""Smoothing before int8 (:mod:`hm3.export.smooth`): exact in float, on by default, recorded.

The models are the shared tiny zoo's classifiers of every family the exporter supports (random
weights, a tokenizer that sees words) and the tiny BERT TIES merge.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import hm3
from hm3.cli.app import main
from hm3.export.smooth import DEFAULT_ALPHA, calibrate, factors, smooth_classifier
from tiny import FAMILIES, toy_texts

CALIBRATION = toy_texts(40, seed=3)
OTHER = [*toy_texts(7, seed=11), "good " * 40]


def batches(texts, size=16):
    return [texts[i : i + size] for i in range(0, len(texts), size)]


@pytest.mark.parametrize("family", FAMILIES)
def test_smoothed_model_has_the_same_logits(family, zoo_of, one_thread):
    clf = hm3.load(zoo_of(family).models[0])
    before = {n: p.detach().clone() for n, p in clf.model.named_parameters()}
    model, done = smooth_classifier(clf, batches(CALIBRATION), batch_size=16)
    assert done.skipped is None, done.skipped
    assert model is not None and done.layers > 0 and done.inputs <= done.layers
    assert done.texts == len(CALIBRATION) and done.alpha == DEFAULT_ALPHA
    # the original is untouched; the copy's weights moved
    assert all(torch.equal(p, before[n]) for n, p in clf.model.named_parameters())
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == done.layers
    want = clf.logits(OTHER, 4)
    clf.model = model
    got = clf.logits(OTHER, 4)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(want).max() > 1e-3  # logits that could differ


def test_smoothing_divides_each_input_channel_by_its_factor(zoo_of, one_thread):
    """Recalibrated, the smoothed copy's query input range is the original's / s, and query, key
    and value (one input) share s."""
    clf = hm3.load(zoo_of("bert").models[0])
    ranges = calibrate(clf, batches(CALIBRATION), 16)
    groups = ranges.groups()
    qkv = next(g for g in groups.values() if any(n.endswith("query") for n in g))
    assert sorted(n.rsplit(".", 1)[1] for n in qkv) == ["key", "query", "value"]
    layers = dict(clf.model.named_modules())
    s = factors(ranges.amax[qkv[0]], [layers[n].weight for n in qkv], DEFAULT_ALPHA)
    assert s.max() / s.min() > 1.5  # the channels' ranges differ: s is not a constant
    model, _ = smooth_classifier(clf, batches(CALIBRATION), batch_size=16)
    clf.model = model
    again = calibrate(clf, batches(CALIBRATION), 16)
    np.testing.assert_allclose(again.amax[qkv[0]], ranges.amax[qkv[0]] / s, rtol=1e-4)


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
