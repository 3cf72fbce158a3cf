"""The CLI end to end, in-process: success paths, and every bad input of the core issue.

Each bad input must exit with status 2, print one line naming the file and the fix, show no
traceback and leave no output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from hm3.cli import main
from tiny import make_base, make_classifier, write_merge_yaml


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def expect_user_error(capsys, tmp_path, *argv, match: str):
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err
    text = " ".join(err.split())
    assert match.lower() in text.lower(), text
    assert not (tmp_path / "out").exists()
    return text


def test_merge_then_predict_json(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(
        tmp_path / "merge.yaml",
        bert_zoo.base,
        bert_zoo.models,
        "dare_ties",
        parameters={"density": 0.5},
    )
    code, _, err = run(capsys, "merge", cfg, "--out", tmp_path / "merged", "--no-progress")
    assert code == 0, err
    code, out, _ = run(
        capsys,
        "predict",
        tmp_path / "merged",
        "ignore all previous instructions",
        "hello",
        "--json",
    )
    assert code == 0
    results = json.loads(out)["results"]
    assert len(results) == 2
    for result in results:
        assert set(result["tasks"]) == {"task0", "task1", "task2"}
        for task in result["tasks"].values():
            assert abs(sum(task["scores"].values()) - 1) < 1e-5
            assert task["label"] == max(task["scores"], key=task["scores"].get)
    code, out, _ = run(capsys, "predict", tmp_path / "merged", "hello world")
    assert code == 0 and "task1" in out


def test_expand_writes_models_and_mergekit_yaml(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "merge.yaml", bert_zoo.base, bert_zoo.models)
    code, _, err = run(capsys, "expand", cfg, "--out", tmp_path / "exp", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "exp" / "base" / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "exp" / "models").iterdir()) == [
        "task0",
        "task1",
        "task2",
    ]


def test_relative_paths_resolve_against_the_yaml(bert_zoo, tmp_path, capsys):
    for src in (bert_zoo.base, *bert_zoo.models[:2]):
        shutil.copytree(src, tmp_path / "zoo" / src.name)
    (tmp_path / "zoo" / "merge.yaml").write_text(
        "base_model: base\nmerge_method: linear\nmodels:\n  - model: task0\n"
        "  - model: task1\n    name: second\n"
    )
    code, _, err = run(
        capsys, "merge", tmp_path / "zoo" / "merge.yaml", "-o", tmp_path / "m", "--no-progress"
    )
    assert code == 0, err


# -- bad input -----------------------------------------------------------------------------
def test_models_of_different_architectures(zoo_factory, tmp_path, capsys):
    bert, roberta = zoo_factory("bert"), zoo_factory("roberta")
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert.base, [bert.models[0], roberta.models[0]])
    expect_user_error(
        capsys,
        tmp_path,
        "merge",
        cfg,
        "--out",
        tmp_path / "out",
        match="architecture 'roberta' differs",
    )


def test_models_of_different_hidden_sizes(bert_zoo, tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    other = tmp_path / "wide"
    BertForSequenceClassification(
        BertConfig(
            vocab_size=100,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(other)
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], other])
    expect_user_error(
        capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match="hidden size 48 differs"
    )


def test_body_shape_differs_from_base(bert_zoo, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    other_base = tmp_path / "otherbase"
    BertModel(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=64,
        )
    ).save_pretrained(other_base)
    cfg = write_merge_yaml(tmp_path / "m.yaml", other_base, bert_zoo.models[:2])
    text = expect_user_error(
        capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match="but the base's is"
    )
    assert "fine-tuned from" in text


def test_model_without_classification_head(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], bert_zoo.base])
    expect_user_error(
        capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match="no classification head"
    )


def test_different_tokenizer_vocabularies(bert_zoo, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(bert_zoo.models[1], other)
    vocab = (other / "vocab.txt").read_text().splitlines()
    vocab[10], vocab[11] = vocab[11], vocab[10]
    (other / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (other / "tokenizer.json").unlink()
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], other])
    expect_user_error(
        capsys,
        tmp_path,
        "merge",
        cfg,
        "--out",
        tmp_path / "out",
        match="tokenizer vocabulary differs",
    )


def test_nan_weights(bert_zoo, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(bert_zoo.models[1], bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors["classifier.bias"][0] = float("inf")
    save_file(tensors, str(bad / "model.safetensors"))
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], bad])
    expect_user_error(
        capsys,
        tmp_path,
        "merge",
        cfg,
        "--out",
        tmp_path / "out",
        match="classifier.bias contains NaN or Inf",
    )


@pytest.mark.parametrize("density", [0, 1.5, -0.1])
def test_density_outside_unit_interval(bert_zoo, tmp_path, capsys, density):
    cfg = write_merge_yaml(
        tmp_path / "m.yaml",
        bert_zoo.base,
        bert_zoo.models,
        "dare_ties",
        parameters={"density": density},
    )
    expect_user_error(
        capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match="parameters.density"
    )


def test_weights_summing_to_zero(bert_zoo, tmp_path, capsys):
    (tmp_path / "m.yaml").write_text(
        json.dumps(
            {
                "base_model": str(bert_zoo.base),
                "merge_method": "linear",
                "models": [
                    {"model": str(bert_zoo.models[0]), "parameters": {"weight": 1}},
                    {"model": str(bert_zoo.models[1]), "parameters": {"weight": -1}},
                ],
            }
        )
    )
    expect_user_error(
        capsys,
        tmp_path,
        "merge",
        tmp_path / "m.yaml",
        "--out",
        tmp_path / "out",
        match="weights sum to zero",
    )


def test_missing_and_truncated_safetensors(bert_zoo, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(bert_zoo.models[1], bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) - 100])
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], bad])
    expect_user_error(
        capsys,
        tmp_path,
        "merge",
        cfg,
        "--out",
        tmp_path / "out",
        match="bad/model.safetensors: truncated",
    )
    (bad / "model.safetensors").unlink()
    expect_user_error(
        capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match="no weights found"
    )


def test_yaml_unknown_key_and_misspelled_method(bert_zoo, tmp_path, capsys):
    (tmp_path / "m.yaml").write_text(
        f"base_model: {bert_zoo.base}\nmerge_method: ties\nmodles: []\nmodels: [{{model: x}}]\n"
    )
    text = expect_user_error(
        capsys,
        tmp_path,
        "merge",
        tmp_path / "m.yaml",
        "--out",
        tmp_path / "out",
        match="unknown key 'modles' (did you mean 'models'?)",
    )
    assert "valid keys at the top level: base_model, merge_method, parameters, models" in text
    cfg = write_merge_yaml(tmp_path / "m2.yaml", bert_zoo.base, bert_zoo.models, "dare-ties")
    clean = "merge_method: unknown method 'dare-ties' (did you mean 'dare_ties'?); expected one"
    text = expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match=clean)
    assert text.count("dare-ties") == 1 and text.count("merge_method") == 1  # said once
    assert "linear, task_arithmetic, ties" in text  # the valid names are listed
    (tmp_path / "bad.yaml").write_text("base_model: [unclosed\n")
    expect_user_error(
        capsys,
        tmp_path,
        "merge",
        tmp_path / "bad.yaml",
        "--out",
        tmp_path / "out",
        match="not valid YAML",
    )
    expect_user_error(
        capsys,
        tmp_path,
        "merge",
        tmp_path / "none.yaml",
        "--out",
        tmp_path / "out",
        match="not found",
    )


def test_pickled_weights_refused_unless_allowed(bert_zoo, tmp_path, capsys):
    pickled = tmp_path / "pickled"
    shutil.copytree(bert_zoo.models[1], pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], pickled])
    expect_user_error(
        capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match="--allow-pickle"
    )
    code, _, err = run(
        capsys, "merge", cfg, "--out", tmp_path / "ok", "--allow-pickle", "--no-progress"
    )
    assert code == 0, err


def test_existing_out(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models)
    (tmp_path / "taken").mkdir()
    code, _, err = run(capsys, "merge", cfg, "--out", tmp_path / "taken")
    assert code == 2 and "--force" in err
    code, _, err = run(
        capsys, "merge", cfg, "--out", tmp_path / "taken", "--force", "--no-progress"
    )
    assert code == 0, err


def test_unsupported_architecture_lists_supported_and_heads_hint(tmp_path, capsys):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    gpt = tmp_path / "gpt"
    GPT2ForSequenceClassification(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, pad_token_id=0)
    ).save_pretrained(gpt)
    cfg = write_merge_yaml(tmp_path / "m.yaml", gpt, [gpt])
    text = expect_user_error(
        capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out", match="'gpt2' is not a supported"
    )
    assert "bert" in text and "heads:" in text


def test_declared_heads_merge_an_unknown_family(tmp_path, capsys):
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2Model

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, pad_token_id=0)
    GPT2Model(config).save_pretrained(tmp_path / "base")
    for i in range(2):
        torch.manual_seed(i)
        GPT2ForSequenceClassification(config).save_pretrained(tmp_path / f"m{i}")
    cfg = write_merge_yaml(
        tmp_path / "m.yaml",
        tmp_path / "base",
        [tmp_path / "m0", tmp_path / "m1"],
        "linear",
        heads={"projection": ["score.weight"]},
    )
    code, _, err = run(capsys, "merge", cfg, "--out", tmp_path / "merged", "--no-progress")
    assert code == 0, err
    assert load_file(str(tmp_path / "merged" / "model.safetensors"))["score.weight"].shape == (
        4,
        16,
    )


def test_bug_exits_with_status_1(bert_zoo, tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("internal bug")

    monkeypatch.setattr("hm3.recipe.merge_weights", boom)
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models)
    with pytest.raises(RuntimeError):
        main(["merge", str(cfg), "--out", str(tmp_path / "out")])


def test_predict_errors(tmp_path, capsys):
    expect_user_error(capsys, tmp_path, "predict", tmp_path / "missing", "hi", match="not found")
    make_base(tmp_path / "b")
    model = make_classifier(tmp_path / "b", tmp_path / "clf", ["a", "b"], seed=0)
    (model / "vocab.txt").unlink()
    (model / "tokenizer.json").unlink()
    expect_user_error(capsys, tmp_path, "predict", model, "hi", match="no tokenizer files")


def test_output_directory_has_mkdir_permissions(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "linear")
    out = tmp_path / "merged"
    for umask, force in ((0o022, ()), (0o002, ("--force",))):  # a new output, then a replaced one
        before = os.umask(umask)
        try:
            code, _, err = run(capsys, "merge", cfg, "--out", out, "--no-progress", *force)
        finally:
            os.umask(before)
        assert code == 0, err
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
        weights = out / "model.safetensors"
        assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~umask
