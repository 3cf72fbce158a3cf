"""Streaming merge to disk: output format, exact values, determinism, atomic output."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from hm3.merging.stream import merge
from hm3.methods import METHODS, MergeOptions
from hm3.model.heads import expand_rows
from tiny import FAMILIES, make_classifier


def _config(zoo, method="ties", models=None, **extra):
    data = {
        "base_model": str(zoo.base),
        "merge_method": method,
        "models": models or [{"model": str(m)} for m in zoo.models],
    }
    data.update(extra)
    return MergeConfig.from_dict(data)


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_checkpoint_is_a_standard_hf_classifier(zoo_factory, tmp_path, family):
    zoo = zoo_factory(family)
    result = merge(_config(zoo, parameters={"density": 0.5}), tmp_path / "merged", progress=False)
    out = result.path
    assert {"config.json", "model.safetensors", "README.md", "vocab.txt"} <= {
        p.name for p in out.iterdir()
    }
    model = AutoModelForSequenceClassification.from_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert model.config.num_labels == 2 + 3 + 4
    assert config["id2label"]["0"] == "task0/benign"
    assert config["id2label"]["2"] == "task1/class_0"  # LABEL_0 is uninformative
    assert config["id2label"]["8"] == "task2/z"
    tasks = config["hm3"]["tasks"]
    assert [(t["name"], t["start"], t["end"]) for t in tasks] == [
        ("task0", 0, 2),
        ("task1", 2, 5),
        ("task2", 5, 9),
    ]
    assert config["hm3"]["merge"]["method"] == "ties"
    assert "ties" in (out / "README.md").read_text()
    assert not list(tmp_path.glob(".merged.tmp-*"))


HIDDEN_HEAD = {  # a hidden head tensor of each family: a classifier base has it too
    "bert": "bert.pooler.dense.weight",
    "distilbert": "pre_classifier.weight",
    "roberta": "classifier.dense.weight",
    "deberta-v2": "pooler.dense.weight",
    "electra": "classifier.dense.weight",
}


@pytest.mark.parametrize("family", HIDDEN_HEAD)
def test_classifier_base_gives_every_tensor_a_task_vector(zoo_factory, tmp_path, family):
    zoo = zoo_factory(family, bare=False)
    cfg = _config(zoo, "task_arithmetic", parameters={"lambda": 0.5})
    result = merge(cfg, tmp_path / "m", progress=False)
    assert result.warnings == []
    AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    name = HIDDEN_HEAD[family]
    base = load_file(str(zoo.base / "model.safetensors"))[name]
    stack = torch.stack([load_file(str(m / "model.safetensors"))[name] for m in zoo.models])
    expected = METHODS["task_arithmetic"].merge(
        base, stack, cfg.model_params(), MergeOptions(lambda_=0.5)
    )
    torch.testing.assert_close(_stored(tmp_path / "m")[name], expected, atol=0, rtol=0)


def _stored(path):
    return load_file(str(path / "model.safetensors"))


def test_body_and_head_values_equal_the_method_on_expanded_inputs(bert_zoo, tmp_path):
    weights = [1.0, 0.5, 2.0]
    models = [
        {"model": str(m), "parameters": {"weight": w}}
        for m, w in zip(bert_zoo.models, weights, strict=True)
    ]
    merge(
        _config(bert_zoo, "ties", models, parameters={"density": 0.7}),
        tmp_path / "m",
        progress=False,
    )
    merged = _stored(tmp_path / "m")
    base = load_file(str(bert_zoo.base / "model.safetensors"))
    originals = [load_file(str(m / "model.safetensors")) for m in bert_zoo.models]
    ties = METHODS["ties"]
    params = MergeConfig.model_params(
        _config(bert_zoo, "ties", models, parameters={"density": 0.7})
    )
    name = "bert.encoder.layer.1.attention.self.query.weight"
    expected = ties.merge(
        base[name.removeprefix("bert.")], torch.stack([o[name] for o in originals]), params
    )
    torch.testing.assert_close(merged[name], expected, atol=0, rtol=0)
    starts = [0, 2, 5]
    heads = torch.stack(
        [expand_rows(o["classifier.weight"], s, 9) for o, s in zip(originals, starts, strict=True)]
    )
    expected = ties.merge(torch.zeros(9, 32), heads, params)
    torch.testing.assert_close(merged["classifier.weight"], expected, atol=0, rtol=0)


def test_soup_shrinks_each_head_by_its_weight_share(bert_zoo, tmp_path):
    merge(_config(bert_zoo, "linear"), tmp_path / "m", progress=False)
    merged = _stored(tmp_path / "m")["classifier.weight"]
    first = load_file(str(bert_zoo.models[0] / "model.safetensors"))["classifier.weight"]
    torch.testing.assert_close(merged[0:2], first / 3)


NO_BASE = {"roberta": "classifier.dense", "deberta-v2": "pooler.dense"}  # bare bases lack these


def _weighted(zoo, weights):
    return [
        {"model": str(m), "parameters": {"weight": w}}
        for m, w in zip(zoo.models, weights, strict=True)
    ]


def _no_base_inputs(zoo, family):
    name = f"{NO_BASE[family]}.weight"
    return name, torch.stack([load_file(str(m / "model.safetensors"))[name] for m in zoo.models])


@pytest.mark.parametrize("family", NO_BASE)
def test_tensors_the_base_lacks_are_the_plain_mean_with_a_warning(
    zoo_factory, tmp_path, caplog, family
):
    zoo = zoo_factory(family)
    models = _weighted(zoo, [1, 2, 3])
    result = merge(_config(zoo, "ties", models), tmp_path / "m", progress=False)
    name, stack = _no_base_inputs(zoo, family)
    (warning,) = result.warnings
    assert name in warning and "plain (unweighted) mean" in warning and "no_base: method" in warning
    assert "plain (unweighted) mean" in caplog.text
    torch.testing.assert_close(_stored(tmp_path / "m")[name], stack.mean(0), atol=0, rtol=0)
    assert warning in (tmp_path / "m" / "README.md").read_text()
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["merge"]
    assert meta["no_base"] == "mean"


@pytest.mark.parametrize("family", NO_BASE)
def test_no_base_method_runs_the_method_on_the_models_mean(zoo_factory, tmp_path, family):
    zoo = zoo_factory(family)
    models = _weighted(zoo, [1, 2, 3])
    cfg = _config(zoo, "ties", models, parameters={"density": 0.6}, no_base="method")
    result = merge(cfg, tmp_path / "m", progress=False)
    name, stack = _no_base_inputs(zoo, family)
    expected = METHODS["ties"].merge(stack.mean(0), stack, cfg.model_params())
    torch.testing.assert_close(_stored(tmp_path / "m")[name], expected, atol=0, rtol=0)
    assert not torch.allclose(expected, stack.mean(0))  # the option changes the tensor
    assert "ties runs on them with the models' plain mean as their base" in result.warnings[0]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["merge"]
    assert meta["no_base"] == "method"
    assert "no_base: method" in (tmp_path / "m" / "README.md").read_text()


def test_linear_merges_tensors_the_base_lacks_as_the_weighted_mean(zoo_factory, tmp_path):
    zoo = zoo_factory("roberta")
    models = _weighted(zoo, [1, 2, 3])
    result = merge(_config(zoo, "linear", models), tmp_path / "m", progress=False)
    name, stack = _no_base_inputs(zoo, "roberta")
    soup = (stack[0] + 2 * stack[1] + 3 * stack[2]) / 6
    torch.testing.assert_close(_stored(tmp_path / "m")[name], soup)
    assert "weighted mean" in result.warnings[0] and "plain" not in result.warnings[0]


def test_no_base_accepts_only_mean_or_method(bert_zoo):
    with pytest.raises(Hm3Error, match=r"no_base: Input should be 'mean' or 'method'"):
        _config(bert_zoo, no_base="median")


def test_same_config_same_bytes_and_seed_changes_them(bert_zoo, tmp_path):
    cfg = _config(bert_zoo, "dare_ties", parameters={"density": 0.4}, seed=3)
    merge(cfg, tmp_path / "a", progress=False)
    merge(cfg, tmp_path / "b", progress=False)
    merge(
        _config(bert_zoo, "dare_ties", parameters={"density": 0.4}, seed=4),
        tmp_path / "c",
        progress=False,
    )
    a, b, c = ((tmp_path / x / "model.safetensors").read_bytes() for x in "abc")
    assert a == b
    assert a != c


def test_self_merge_draws_independent_masks(bert_zoo, tmp_path):
    one = str(bert_zoo.models[0])
    cfg = _config(
        bert_zoo,
        "dare_linear",
        [{"model": one}, {"model": one}],
        parameters={"density": 0.5, "rescale": False},
    )
    merge(cfg, tmp_path / "m", progress=False)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    merged = _stored(tmp_path / "m")[name]
    base = load_file(str(bert_zoo.base / "model.safetensors"))[name.removeprefix("bert.")]
    tau = load_file(str(bert_zoo.models[0] / "model.safetensors"))[name] - base
    ratio = ((merged - base) / tau)[tau.abs() > 1e-4]
    # each entry is kept by 0, 1 or 2 of the masks; identical masks would give only 0 or 2
    share_once = ((ratio - 1).abs() < 1e-3).float().mean().item()
    assert 0.35 < share_once < 0.65
    # the two copies are two tasks with distinct names
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert [t["name"] for t in config["hm3"]["tasks"]] == ["task0", "task0_2"]


def test_sharded_inputs_and_bfloat16_output(bert_zoo, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(bert_zoo.models[0])
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    for f in bert_zoo.models[0].glob("*.txt"):
        (sharded / f.name).write_bytes(f.read_bytes())
    cfg = _config(bert_zoo, "ties", [{"model": str(sharded)}, {"model": str(bert_zoo.models[1])}])
    merge(cfg, tmp_path / "m", dtype="bfloat16", progress=False)
    merged = _stored(tmp_path / "m")
    assert merged["classifier.weight"].dtype == torch.bfloat16
    ref = tmp_path / "ref"
    merge(
        _config(
            bert_zoo,
            "ties",
            [{"model": str(bert_zoo.models[0])}, {"model": str(bert_zoo.models[1])}],
        ),
        ref,
        dtype="bfloat16",
        progress=False,
    )
    assert all(torch.equal(v, _stored(ref)[k]) for k, v in merged.items())


def test_existing_output_refused_then_replaced_with_force(bert_zoo, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(Hm3Error, match=r"already exists.*force=True"):
        merge(_config(bert_zoo), out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    merge(_config(bert_zoo), out, force=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_failure_midway_leaves_no_output(bert_zoo, tmp_path):
    broken = make_classifier(bert_zoo.base, tmp_path / "broken", ["a", "b"], seed=1)
    tensors = load_file(str(broken / "model.safetensors"))
    tensors["bert.encoder.layer.1.output.dense.weight"][0, 0] = float("nan")
    from safetensors.torch import save_file

    save_file(tensors, str(broken / "model.safetensors"))
    cfg = _config(bert_zoo, "ties", [{"model": str(bert_zoo.models[0])}, {"model": str(broken)}])
    with pytest.raises(Hm3Error, match=r"models\[1\].*layer\.1\.output\.dense\.weight.*NaN"):
        merge(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_merge_options_reach_the_method(bert_zoo, tmp_path):
    cfg = _config(bert_zoo, "task_arithmetic", parameters={"lambda": 0.5})
    merge(cfg, tmp_path / "m", progress=False)
    name = "bert.pooler.dense.weight"
    base = load_file(str(bert_zoo.base / "model.safetensors"))["pooler.dense.weight"]
    stack = torch.stack([load_file(str(m / "model.safetensors"))[name] for m in bert_zoo.models])
    expected = METHODS["task_arithmetic"].merge(
        base, stack, cfg.model_params(), MergeOptions(lambda_=0.5)
    )
    torch.testing.assert_close(_stored(tmp_path / "m")[name], expected)


def _unknown_family(root, family):
    """A bare base and two classifiers of a family outside hm3's table (``score.weight`` head)."""
    import transformers as tf

    if family == "gpt2":
        config = tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, pad_token_id=0)
        bare, classifier = tf.GPT2Model, tf.GPT2ForSequenceClassification
    else:
        config = tf.LlamaConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, vocab_size=50, pad_token_id=0,
        )  # fmt: skip
        bare, classifier = tf.LlamaModel, tf.LlamaForSequenceClassification
    torch.manual_seed(0)
    bare(config).save_pretrained(root / "base")
    for i in range(2):
        model = classifier.from_pretrained(root / "base", num_labels=2 + i)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.02 * torch.randn_like(param))
        model.save_pretrained(root / f"m{i}")
    return root / "base", [root / "m0", root / "m1"]


def _declared(base, models, method, **extra):
    return MergeConfig.from_dict(
        {
            "base_model": str(base),
            "merge_method": method,
            "heads": {"projection": ["score.weight"]},
            "models": [{"model": str(m)} for m in models],
            **extra,
        }
    )


@pytest.mark.parametrize(("family", "prefix"), [("gpt2", "transformer."), ("llama", "model.")])
def test_declared_heads_detect_the_body_prefix_of_an_unknown_family(tmp_path, family, prefix):
    base, models = _unknown_family(tmp_path, family)
    cfg = _declared(base, models, "task_arithmetic", parameters={"lambda": 0.5})
    result = merge(cfg, tmp_path / "m", progress=False)
    assert result.warnings == []  # every body tensor found its base counterpart
    merged, base_sd = _stored(tmp_path / "m"), _stored(base)
    originals = [_stored(m) for m in models]
    assert all(name.startswith(prefix) for name in merged if name != "score.weight")
    for name in merged:
        if name == "score.weight":
            continue
        tau = sum(o[name] - base_sd[name.removeprefix(prefix)] for o in originals)
        expected = base_sd[name.removeprefix(prefix)] + 0.5 * tau
        torch.testing.assert_close(merged[name], expected, msg=name)


def test_a_base_whose_names_do_not_match_is_refused(tmp_path):
    from safetensors.torch import save_file

    base, models = _unknown_family(tmp_path, "gpt2")
    renamed = {f"encoder.{k}": v for k, v in _stored(base).items()}
    save_file(renamed, str(base / "model.safetensors"))
    cfg = _declared(base, models, "linear")
    with pytest.raises(Hm3Error, match=r"base_model .*: \d+ of \d+ body tensors .* no counterpart"):
        merge(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_parameters_that_change_nothing_are_named(bert_zoo, tmp_path, caplog):
    """A model of density 1 is not pruned (as in mergekit): its gamma or epsilon, and rescale
    with no model pruned, were accepted and silently changed nothing."""
    models = [{"model": str(m)} for m in bert_zoo.models]
    models[1] = {**models[1], "parameters": {"density": 0.5}}
    cfg = _config(bert_zoo, "breadcrumbs", models, parameters={"gamma": 0.2})
    assert cfg.idle_parameters() == [
        "gamma changes nothing for models[0, 2]: breadcrumbs prunes nothing at density 1 (the "
        "default); set a density below 1"
    ]
    result = merge(cfg, tmp_path / "m", progress=False)
    assert result.warnings == cfg.idle_parameters() and "gamma changes nothing" in caplog.text
    della = _config(bert_zoo, "della", parameters={"epsilon": 0.9, "rescale": False})
    assert [n.split(":")[0] for n in della.idle_parameters()] == [
        "epsilon changes nothing for models[0, 1, 2]", "parameters"
    ]  # fmt: skip
    assert "rescale changes nothing" in della.idle_parameters()[1]
    pruned = _config(bert_zoo, "della", parameters={"density": 0.5, "epsilon": 0.2})
    assert pruned.idle_parameters() == []
    with pytest.raises(Hm3Error, match="rescale not used by merge_method 'task_arithmetic'"):
        _config(bert_zoo, "task_arithmetic", parameters={"rescale": True})


def test_an_empty_label_name_is_refused(bert_zoo):
    """It became a score keyed "" in every answer and a "task/" entry in id2label."""
    models = [{"model": str(bert_zoo.models[0]), "labels": ["benign", " "]}]
    with pytest.raises(Hm3Error, match=r"models\[0\]\.labels: label 1 is empty; give every label"):
        _config(bert_zoo, models=models)


def test_a_head_tensor_left_out_of_heads_projection_is_named(bert_zoo, tmp_path):
    """The bias of a head declared as its weight alone differs by the label counts: the error
    blamed the base ("merged models must share one base")."""
    config = _config(bert_zoo, models=[{"model": str(m)} for m in bert_zoo.models[::2]],
                     heads={"projection": ["classifier.weight"]})  # fmt: skip
    with pytest.raises(Hm3Error, match=r"tensor classifier\.bias has shape \[\d\] but .*'s is "
                       r"\[\d\]; classifier\.bias has one row per label: add it to heads: "
                       "projection$"):  # fmt: skip
        merge(config, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
