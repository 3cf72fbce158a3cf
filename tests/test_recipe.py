"""``hm3 merge`` with an ``align:`` block: one command gives a merged *and* aligned model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import hm3
from hm3.alignment.api import align
from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from test_alignment import write_texts
from tiny import toy_texts, write_merge_yaml


def _yaml(tmp_path, zoo, **extra):
    return write_merge_yaml(tmp_path / "merge.yaml", zoo.base, zoo.models, "ties", **extra)


@pytest.mark.parametrize("method", ["ties", "regmean"])
def test_the_same_config_gives_the_same_bytes_from_any_directory(bert_zoo, tmp_path, monkeypatch,
                                                                method):  # fmt: skip
    """Text files named relative to the YAML are recorded as one path, whatever the cwd."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    write_texts(cfg / "texts.jsonl", toy_texts(60, seed=3))
    extra = {"regmean": {"texts": "texts.jsonl"}} if method == "regmean" else {}
    write_merge_yaml(cfg / "merge.yaml", bert_zoo.base, bert_zoo.models, method,
                     align={"texts": "texts.jsonl"}, **extra)  # fmt: skip
    configs = []
    for cwd, yaml_path in ((cfg, "merge.yaml"), (tmp_path, "cfg/merge.yaml")):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"out-{len(configs)}"
        hm3.merge(MergeConfig.from_yaml(yaml_path), out, progress=False)
        configs.append((out / "config.json").read_bytes())
    assert configs[0] == configs[1]
    record = json.loads(configs[0])["hm3"]
    texts = str((cfg / "texts.jsonl").resolve())
    assert record["align"]["texts"] == texts
    if method == "regmean":
        assert {m["texts"] for m in record["merge"]["regmean"]["models"]} == {texts}


def test_align_block_gives_the_same_model_as_merge_then_align(bert_zoo, tmp_path):
    write_texts(tmp_path / "texts.jsonl", toy_texts(60, seed=3))
    cfg_path = _yaml(
        tmp_path,
        bert_zoo,
        parameters={"density": 0.5},
        align={"texts": "texts.jsonl", "ridge": 0.2},
    )
    result = hm3.merge(MergeConfig.from_yaml(cfg_path), tmp_path / "one", progress=False)
    assert result.alignment is not None and result.alignment.n_texts == 60
    assert all(t.rmse_after < t.rmse_before for t in result.alignment.tasks)
    # the two-step way, by hand
    plain = MergeConfig.from_yaml(_yaml(tmp_path, bert_zoo, parameters={"density": 0.5}))
    hm3.merge(plain, tmp_path / "merged", progress=False)
    align(
        tmp_path / "merged", tmp_path / "texts.jsonl", tmp_path / "two", ridge=0.2, progress=False
    )
    one, two = (
        load_file(str(tmp_path / "one" / "model.safetensors")),
        load_file(str(tmp_path / "two" / "model.safetensors")),
    )
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    assert config["hm3"]["align"]["ridge"] == 0.2 and config["hm3"]["merge"]["method"] == "ties"
    assert "Head alignment" in (tmp_path / "one" / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_merge_with_align_prints_the_fit(bert_zoo, tmp_path, capsys):
    write_texts(tmp_path / "texts.csv", toy_texts(30, seed=4))
    cfg = _yaml(tmp_path, bert_zoo, align={"texts": "texts.csv"})
    with pytest.raises(SystemExit) as done:
        main(["merge", str(cfg), "--out", str(tmp_path / "m"), "--no-progress"])
    assert done.value.code in (0, None)
    err = capsys.readouterr().err
    assert "logit RMSE" in err and "aligned 3 tasks on 30 texts" in err
    assert err.index("merged task0") < err.index("logit RMSE"), err  # in the order they ran


def test_missing_align_texts_fails_before_merging(bert_zoo, tmp_path):
    cfg = MergeConfig.from_yaml(_yaml(tmp_path, bert_zoo, align={"texts": "nope.jsonl"}))
    with pytest.raises(Hm3Error, match=r"align\.texts: file nope\.jsonl not found"):
        hm3.merge(cfg, tmp_path / "m", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge.yaml"]


def test_wrong_text_column_fails_before_merging_named_as_in_the_yaml(bert_zoo, tmp_path):
    write_texts(tmp_path / "texts.jsonl", toy_texts(10, seed=5), column="body")
    cfg = MergeConfig.from_yaml(_yaml(tmp_path, bert_zoo, align={"texts": "texts.jsonl"}))
    # no base model at all: were the models opened first, the error would be about them
    cfg = cfg.model_copy(update={"base_model": str(tmp_path / "no-such-base")})
    with pytest.raises(Hm3Error) as err:
        hm3.merge(cfg, tmp_path / "m", progress=False)
    message = str(err.value)
    assert message.startswith("align.texts ") and "texts.jsonl" in message
    assert "no column 'text'; columns in the file: body, id; set align.text_column" in message
    assert "--text" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge.yaml", "texts.jsonl"]


def test_failed_alignment_leaves_no_output_and_no_scratch(bert_zoo, tmp_path):
    # a text that is not a string is found only while streaming, after the merge
    (tmp_path / "texts.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    cfg = MergeConfig.from_yaml(_yaml(tmp_path, bert_zoo, align={"texts": "texts.jsonl"}))
    with pytest.raises(Hm3Error, match=r"row 2 of column 'text' is not text.*align\.text_column"):
        hm3.merge(cfg, tmp_path / "m", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge.yaml", "texts.jsonl"]


def test_existing_out_is_refused_before_any_work(bert_zoo, tmp_path):
    write_texts(tmp_path / "texts.jsonl", toy_texts(10, seed=5))
    (tmp_path / "m").mkdir()
    cfg = MergeConfig.from_yaml(_yaml(tmp_path, bert_zoo, align={"texts": "texts.jsonl"}))
    with pytest.raises(Hm3Error, match="already exists"):
        hm3.merge(cfg, tmp_path / "m", progress=False)
    assert list((tmp_path / "m").iterdir()) == []


def test_public_api_names_stay_functions_after_their_modules_are_imported():
    import hm3.alignment.api
    import hm3.evaluation.run
    import hm3.merging.stream
    import hm3.model.classifier
    import hm3.recipe

    assert hm3.merge is hm3.recipe.merge
    assert hm3.align is hm3.alignment.api.align
    assert hm3.evaluate is hm3.evaluation.run.evaluate
    assert hm3.load is hm3.model.classifier.load
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = hm3.nope


def test_align_block_max_length_reaches_the_fit(bert_zoo, tmp_path):
    long = [" ".join(["good"] * 30 + ["bad"] * 30)] * 3 + toy_texts(20, seed=6)
    write_texts(tmp_path / "texts.jsonl", long)
    results = {}
    for n in (4, 512):
        cfg = _yaml(tmp_path, bert_zoo, align={"texts": "texts.jsonl", "max_length": n})
        result = hm3.merge(MergeConfig.from_yaml(cfg), tmp_path / f"m{n}", progress=False)
        results[n] = [t.rmse_before for t in result.alignment.tasks]
    assert results[4] != results[512]  # truncating to 4 tokens changes what the fit sees
    with pytest.raises(Hm3Error, match="max_length"):
        MergeConfig.from_yaml(_yaml(tmp_path, bert_zoo, align={"texts": "t", "max_length": 0}))


def test_align_block_ridge_auto(bert_zoo, tmp_path):
    write_texts(tmp_path / "texts.jsonl", toy_texts(60, seed=3))
    cfg = _yaml(tmp_path, bert_zoo, align={"texts": "texts.jsonl", "ridge": "auto"})
    result = hm3.merge(MergeConfig.from_yaml(cfg), tmp_path / "m", progress=False)
    assert result.alignment is not None and result.alignment.ridge == "auto"
    record = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["align"]
    assert record["ridge"] == "auto" and all(t["ridge"] > 0 for t in record["tasks"])


@pytest.mark.parametrize("ridge", ["best", -1, float("nan"), True])
def test_align_block_bad_ridge_names_the_key_and_the_choices(bert_zoo, tmp_path, ridge):
    cfg = _yaml(tmp_path, bert_zoo, align={"texts": "texts.jsonl", "ridge": ridge})
    expected = r"align\.ridge: expected a finite number >= 0 or auto \(default auto\) \(got "
    with pytest.raises(Hm3Error, match=expected):
        MergeConfig.from_yaml(cfg)
