"""HM3 expansion (Algorithm 1): each expanded model reproduces its original on its segment."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hm3.merging.config import MergeConfig
from hm3.merging.expanded import expand
from hm3.model.heads import expand_rows, zero_rows
from tiny import FAMILIES, toy_texts


def test_expand_rows_places_the_segment_and_zeros_elsewhere():
    w = torch.arange(6.0).reshape(2, 3) + 1
    out = expand_rows(w, 3, 7)
    assert out.shape == (7, 3)
    assert torch.equal(out[3:5], w)
    assert out[:3].abs().sum() == 0 and out[5:].abs().sum() == 0
    b = expand_rows(torch.tensor([1.0, 2.0]), 0, 4)
    assert b.tolist() == [1.0, 2.0, 0.0, 0.0]
    assert zero_rows(w, 5).shape == (5, 3) and zero_rows(w, 5).abs().sum() == 0
    with pytest.raises(ValueError, match="does not fit"):
        expand_rows(w, 6, 7)


def _logits(path, texts):
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.inference_mode():
        return model(**tok(texts, return_tensors="pt", padding=True)).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_expanded_models_match_originals_on_their_segment(zoo_factory, tmp_path, family):
    zoo = zoo_factory(family)
    config = MergeConfig.from_dict(
        {
            "base_model": str(zoo.base),
            "merge_method": "ties",
            "models": [{"model": str(m)} for m in zoo.models],
        }
    )
    out = expand(config, tmp_path / "expanded", progress=False)
    texts = toy_texts(8)
    meta = json.loads((out / "base" / "config.json").read_text())["hm3"]
    total = meta["tasks"][-1]["end"]
    assert torch.count_nonzero(_logits(out / "base", texts)) == 0  # all-zero head (Alg. 1, line 10)
    for model, task in zip(zoo.models, meta["tasks"], strict=True):
        original = _logits(model, texts)
        expanded = _logits(out / "models" / task["name"], texts)
        assert expanded.shape == (len(texts), total)
        torch.testing.assert_close(
            expanded[:, task["start"] : task["end"]], original, atol=1e-5, rtol=1e-5
        )
        others = torch.cat([expanded[:, : task["start"]], expanded[:, task["end"] :]], dim=1)
        assert torch.count_nonzero(others) == 0
    assert (out / "mergekit.yaml").is_file()


def _expand(zoo, tmp_path, method, **extra):
    config = MergeConfig.from_dict(
        {
            "base_model": str(zoo.base),
            "merge_method": method,
            "models": [{"model": str(m)} for m in zoo.models],
            **extra,
        }
    )
    return expand(config, tmp_path / method, progress=False)


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_mergekit_recipe_names_a_base_only_for_methods_that_read_one(bert_zoo, tmp_path, method):
    out = _expand(bert_zoo, tmp_path, method)
    recipe = yaml.safe_load((out / "mergekit.yaml").read_text())
    # mergekit's linear averages in every listed model, the base too, and wants its weight
    assert ("base_model" in recipe) == (method != "linear")
    MergeConfiguration.model_validate(recipe)
    assert (out / "base" / "model.safetensors").is_file()  # written either way


def test_expanded_base_holds_the_mean_where_the_base_lacks_a_tensor(zoo_factory, tmp_path):
    zoo = zoo_factory("roberta")  # a bare RobertaModel has no classifier.dense
    out = _expand(zoo, tmp_path, "ties")
    name = "classifier.dense.weight"
    stack = torch.stack([load_file(str(m / "model.safetensors"))[name] for m in zoo.models])
    base = load_file(str(out / "base" / "model.safetensors"))[name]
    torch.testing.assert_close(base, stack.mean(0), atol=0, rtol=0)
    header = (out / "mergekit.yaml").read_text().split("merge_method")[0]
    assert "classifier.dense.weight" in header and "set `no_base: method`" in header
    out = _expand(zoo, tmp_path / "method", "ties", no_base="method")
    header = (out / "mergekit.yaml").read_text().split("merge_method")[0]
    assert "classifier.dense.weight" in header and "no_base: mean" not in header


def test_what_mergekit_yaml_cannot_say_is_said(bert_zoo, tmp_path, caplog):
    """An align: block was dropped without a word: a mergekit user lost the alignment."""
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in toy_texts(8, seed=1)))
    config = MergeConfig.from_dict({
        "base_model": str(bert_zoo.base), "merge_method": "dare_ties", "seed": 7,
        "models": [{"model": str(m)} for m in bert_zoo.models],
        "parameters": {"density": 0.5}, "align": {"texts": str(texts)},
    })  # fmt: skip
    out = expand(config, tmp_path / "x", progress=False)
    header = (out / "mergekit.yaml").read_text()
    assert (
        "# the config's align: block is not in mergekit.yaml (mergekit aligns no heads)" in header
    )
    assert "`hm3 align OUT --texts FILE --out ALIGNED`" in header  # a command that runs
    assert "mergekit's are its own, not those of `hm3 merge` with seed 7" in header
    assert "align: block is not in mergekit.yaml" in caplog.text
    MergeConfiguration.model_validate(yaml.safe_load(header))  # comments only
