"""RegMean (``merge_method: regmean``): the closed form, its statistics, and the whole merge."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

import hm3
from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from hm3.merging.expanded import expand
from hm3.methods import METHODS, MergeOptions, ModelParams
from hm3.methods.regmean import RegMeanSums, regmean
from test_alignment import write_texts
from test_cli import expect_user_error
from tiny import FAMILIES, toy_texts, write_merge_yaml

# ---- the closed form ------------------------------------------------------------------------


def _inputs(n: int, rows: int, d_in: int, d_out: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(rows, d_in, generator=gen, dtype=torch.float64) for _ in range(n)]
    ws = torch.randn(n, d_out, d_in, generator=gen, dtype=torch.float64)
    grams = torch.stack([x.T @ x / rows for x in xs])
    return xs, ws, grams


def test_one_model_gives_its_own_weight_for_every_alpha():
    _, ws, grams = _inputs(1, 40, 6, 3)
    for alpha in (0.0, 0.5, 1.0):
        torch.testing.assert_close(regmean(ws, grams, [1.0], alpha), ws[0])


def test_alpha_one_is_the_least_squares_fit_of_every_models_outputs():
    xs, ws, grams = _inputs(3, 30, 5, 4, seed=1)
    weights = [1.0, 2.0, 0.5]
    # reference: min_W Σ_i w_i ‖X_i Wᵀ − X_i W_iᵀ‖² / m_i by lstsq on the stacked, scaled rows
    a = torch.cat([x * (w / len(x)) ** 0.5 for x, w in zip(xs, weights, strict=True)])
    b = torch.cat(
        [x @ wi.T * (w / len(x)) ** 0.5 for x, wi, w in zip(xs, ws, weights, strict=True)]
    )
    expected = torch.linalg.lstsq(a, b).solution.T
    torch.testing.assert_close(regmean(ws, grams, weights, 1.0), expected)


def test_diagonal_grams_give_a_per_feature_weighted_mean():
    ws = torch.tensor([[[1.0, 2.0]], [[3.0, 6.0]]], dtype=torch.float64)
    grams = torch.stack([torch.diag(torch.tensor(g)) for g in ([1.0, 3.0], [3.0, 1.0])]).double()
    got = regmean(ws, grams, [1.0, 1.0], 0.7)
    # feature 0: (1·1 + 3·3) / 4 = 2.5; feature 1: (2·3 + 6·1) / 4 = 3
    torch.testing.assert_close(got, torch.tensor([[2.5, 3.0]], dtype=torch.float64))


def test_sums_solve_any_alpha_like_scaling_each_gram_first():
    _, ws, grams = _inputs(2, 25, 4, 3, seed=2)
    sums = RegMeanSums.zeros(3, 4)
    for w, g in zip(ws, grams, strict=True):
        sums.add(w, g, 1.5)
    for alpha in (0.0, 0.3, 0.9):
        scaled = torch.stack([alpha * g + (1 - alpha) * torch.diag(torch.diag(g)) for g in grams])
        num = sum(w @ g for w, g in zip(ws, scaled, strict=True))
        expected = num @ torch.linalg.inv(scaled.sum(0))
        torch.testing.assert_close(sums.solve(alpha), expected)


def test_registry_regmean_averages_tensors_without_grams():
    tensors = torch.tensor([[1.0, 2.0], [3.0, 8.0]])
    params = [ModelParams(weight=1.0), ModelParams(weight=3.0)]
    got = METHODS["regmean"].merge(None, tensors, params)
    torch.testing.assert_close(got, torch.tensor([2.5, 6.5]))
    assert not METHODS["regmean"].uses_base and METHODS["regmean"].global_parameters == {"alpha"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ws, g: regmean(ws, g, [1.0, 1.0], 1.5), "alpha = 1.5: expected a number in [0, 1]"),
        (lambda ws, g: regmean(ws, g, [1.0, -1.0]), "weight = -1.0"),
        (lambda ws, g: regmean(ws[0], g, [1.0, 1.0]), "expected [n, out, in] and [n, in, in]"),
        (
            lambda ws, g: METHODS["regmean"].merge(
                None, ws, [ModelParams(), ModelParams()], MergeOptions(normalize=True), grams=g
            ),
            "normalize not used by 'regmean'",
        ),
        (
            lambda ws, g: METHODS["ties"].merge(
                ws[0], ws, [ModelParams(), ModelParams()], MergeOptions(alpha=0.5)
            ),
            "alpha not used by 'ties'",
        ),
    ],
)
def test_bad_values_are_named(call, message):
    _, ws, grams = _inputs(2, 10, 3, 2)
    with pytest.raises(Hm3Error, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(ws, grams)


def test_a_feature_that_is_always_zero_is_a_clear_error_at_alpha_one():
    _, ws, grams = _inputs(2, 10, 3, 2)
    grams[:, 2, :] = 0
    grams[:, :, 2] = 0
    with pytest.raises(Hm3Error, match=r"singular.*lower alpha"):
        regmean(ws, grams, [1.0, 1.0], 1.0)
    regmean(ws, grams + torch.eye(3, dtype=grams.dtype) * 1e-3, [1.0, 1.0], 1.0)  # fine


# ---- the config -----------------------------------------------------------------------------


def _config(**doc):
    return MergeConfig.from_dict({"base_model": "b", "models": [{"model": "a"}], **doc})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"merge_method": "regmean"}, "models[0]: merge_method 'regmean' needs texts"),
        (
            {"merge_method": "ties", "models": [{"model": "a", "texts": "t.jsonl"}]},
            "models[0].texts: texts are read only by merge_method 'regmean'",
        ),
        ({"merge_method": "ties", "regmean": {"texts": "t"}}, "regmean: texts are read only"),
        (
            {"merge_method": "ties", "parameters": {"alpha": 0.5}},
            "alpha not used by merge_method 'ties'",
        ),
        (
            {"merge_method": "regmean", "regmean": {"texts": "t"}, "parameters": {"rescale": True}},
            "rescale not used by merge_method 'regmean'",
        ),
        (
            {
                "merge_method": "regmean",
                "regmean": {"texts": "t"},
                "models": [{"model": "a", "parameters": {"weight": 0}}],
            },
            "must be > 0",
        ),
        (
            {"merge_method": "regmean", "regmean": {"texts": "t"}, "parameters": {"alpha": 2}},
            "alpha",
        ),
    ],
)
def test_config_errors_name_the_key(doc, message):
    with pytest.raises(Hm3Error, match=message.replace("[", r"\[").replace("]", r"\]")):
        _config(**doc)


# ---- the whole merge on tiny real checkpoints -----------------------------------------------


def _regmean_yaml(tmp_path, zoo, models=None, **extra):
    for i in range(len(zoo.models)):
        write_texts(tmp_path / f"t{i}.jsonl", toy_texts(24, seed=20 + i))
    doc = {"parameters": {"alpha": 0.9}, "regmean": {"max_length": 32}, **extra}
    path = write_merge_yaml(tmp_path / "merge.yaml", zoo.base, models or zoo.models, "regmean")
    data = json.loads(path.read_text())
    for i, entry in enumerate(data["models"]):
        entry["texts"] = f"t{i % len(zoo.models)}.jsonl"
    path.write_text(json.dumps({**data, **doc}))
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_self_merge_keeps_the_body_for_every_family(zoo_factory, tmp_path, family):
    zoo = zoo_factory(family, bare=False)
    one = zoo.models[1]
    cfg = MergeConfig.from_yaml(_regmean_yaml(tmp_path, zoo, models=[one, one]))
    hm3.merge(cfg, tmp_path / "m", progress=False)
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    original = load_file(str(one / "model.safetensors"))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["merge"]["regmean"]
    assert meta["linear_weights"] > 0
    head = {n for n in merged if n not in original or merged[n].shape != original[n].shape}
    for name, value in original.items():
        if name in head or not value.is_floating_point():
            continue
        torch.testing.assert_close(merged[name], value, atol=2e-5, rtol=1e-4, msg=name)


def _linear_inputs(model_dir, texts, module_name):
    """The rows one Linear of a classifier sees on texts: every non-padding token (reference)."""
    clf = hm3.load(model_dir, device="cpu", max_length=32)
    rows = []
    module = clf.model.get_submodule(module_name)
    handle = module.register_forward_hook(lambda _m, args, _o: rows.append(args[0]))
    with torch.no_grad():
        enc = clf.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        clf.model(**enc)
    handle.remove()
    return rows[0][enc["attention_mask"].bool()].double(), module.weight.detach().double()


def test_merged_layer_is_the_least_squares_fit_on_each_models_texts(bert_zoo, tmp_path):
    models = bert_zoo.models[:2]
    cfg = MergeConfig.from_yaml(_regmean_yaml(tmp_path, bert_zoo, models=models, parameters={}))
    cfg = cfg.model_copy(update={"parameters": cfg.parameters.model_copy(update={"alpha": 1.0})})
    hm3.merge(cfg, tmp_path / "m", progress=False)
    name = "bert.encoder.layer.0.attention.self.query"
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))[f"{name}.weight"].double()
    parts_a, parts_b = [], []
    for i, model in enumerate(models):
        x, w = _linear_inputs(model, toy_texts(24, seed=20 + i), name)
        scale = (1 / len(x)) ** 0.5
        parts_a.append(x * scale)
        parts_b.append(x @ w.T * scale)
    expected = torch.linalg.lstsq(torch.cat(parts_a), torch.cat(parts_b)).solution.T
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-4)
    soup = sum(load_file(str(m / "model.safetensors"))[f"{name}.weight"] for m in models) / 2
    assert not torch.allclose(merged.float(), soup, atol=1e-4)  # it is not the plain average


def test_regmean_merge_records_its_texts_and_loads_unchanged(bert_zoo, tmp_path):
    cfg = MergeConfig.from_yaml(_regmean_yaml(tmp_path, bert_zoo))
    result = hm3.merge(cfg, tmp_path / "m", progress=False)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["merge"]
    assert meta["method"] == "regmean" and meta["parameters"] == {"alpha": 0.9}
    records = meta["regmean"]["models"]
    assert [r["n_texts"] for r in records] == [24, 24, 24]
    assert all(len(r["texts_sha256"]) == 64 for r in records)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    assert model.config.num_labels == result.tasks[-1].end
    out = hm3.load(tmp_path / "m", device="cpu").predict(["good great", "buy cheap now"])
    assert len(out) == 2 and set(out[0].tasks) == {t.name for t in result.tasks}


def test_regmean_then_align_in_one_recipe(bert_zoo, tmp_path):
    write_texts(tmp_path / "align.jsonl", toy_texts(40, seed=5))
    cfg = MergeConfig.from_yaml(
        _regmean_yaml(tmp_path, bert_zoo, align={"texts": "align.jsonl", "ridge": 0.1})
    )
    result = hm3.merge(cfg, tmp_path / "m", progress=False)
    assert result.alignment is not None
    assert all(t.rmse_after < t.rmse_before for t in result.alignment.tasks)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]
    assert meta["merge"]["method"] == "regmean" and meta["align"]["ridge"] == 0.1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_default_text_file_serves_every_model(bert_zoo, tmp_path):
    write_texts(tmp_path / "all.jsonl", toy_texts(20, seed=9))
    path = write_merge_yaml(
        tmp_path / "merge.yaml", bert_zoo.base, bert_zoo.models[:2], "regmean",
        regmean={"texts": "all.jsonl", "max_texts": 12, "max_length": 32},
    )  # fmt: skip
    hm3.merge(MergeConfig.from_yaml(path), tmp_path / "m", progress=False)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["merge"]["regmean"]
    assert [r["n_texts"] for r in meta["models"]] == [12, 12] and meta["max_texts"] == 12


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (None, "models[1].texts: file t1.jsonl not found"),
        ("", "no texts in column 'text' for model"),
        ("other", "column 'text'"),
    ],
)
def test_bad_texts_fail_before_any_output(bert_zoo, tmp_path, capsys, texts, message):
    cfg = _regmean_yaml(tmp_path, bert_zoo)
    target = tmp_path / "t1.jsonl"
    if texts is None:
        target.unlink()
    elif texts == "":
        target.write_text(json.dumps({"text": "  "}) + "\n")
    else:
        write_texts(target, ["a b"], column=texts)
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "m", "--no-progress",
                      match=message, names="models[1].texts")  # fmt: skip


def test_expand_refuses_regmean_with_the_reason(bert_zoo, tmp_path):
    cfg = MergeConfig.from_yaml(_regmean_yaml(tmp_path, bert_zoo))
    with pytest.raises(Hm3Error, match=r"mergekit 0\.1\.5 has no RegMean"):
        expand(cfg, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_streaming_merge_without_statistics_is_refused(bert_zoo, tmp_path):
    from hm3.merging.stream import merge

    cfg = MergeConfig.from_yaml(_regmean_yaml(tmp_path, bert_zoo))
    with pytest.raises(Hm3Error, match="needs the models' Gram statistics"):
        merge(cfg, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_demo_methods_are_checked_before_any_work(tmp_path, capsys):
    from hm3.demo.cases import method_specs

    assert [m.method for m in method_specs(("ties", "regmean"))] == ["ties", "regmean"]
    message = expect_user_error(capsys, tmp_path, "demo", "--out", tmp_path / "r", "--cache",
                                tmp_path / "c", "--methods", "ties,regmen",
                                match="unknown or repeated: regmen", names="--methods")  # fmt: skip
    assert "soup, ties, dare_ties, dare_ties_search, regmean" in message


def test_a_wrong_base_fails_before_any_model_runs(bert_zoo, tmp_path, capsys):
    cfg = _regmean_yaml(tmp_path, bert_zoo)
    doc = json.loads(cfg.read_text())
    doc["base_model"] = str(tmp_path / "no-such-base")
    cfg.write_text(json.dumps(doc))
    # a row that would stop the Gram pass, had it started: the checkpoints are checked first
    (tmp_path / "t0.jsonl").write_text(json.dumps({"text": 5}) + "\n")
    message = expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "m",
                                "--no-progress", match="not found", names="base_model")  # fmt: skip
    assert "not text" not in message


def test_cli_merge_says_what_regmean_was_computed_on(bert_zoo, tmp_path, capsys):
    cfg = _regmean_yaml(tmp_path, bert_zoo)
    with pytest.raises(SystemExit) as done:
        main(["merge", str(cfg), "--out", str(tmp_path / "m"), "--no-progress"])
    assert (done.value.code or 0) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "linear layers solved from each model's Gram matrices on its texts: 24 (task0)" in err
    assert "with regmean →" in err
    result = hm3.merge(MergeConfig.from_yaml(cfg), tmp_path / "m2", progress=False)
    assert result.regmean is not None and len(result.regmean["models"]) == 3
