"""The CLI end to end, in-process: success paths, and every bad input of the core issue.

Each bad input must exit with status 2, print one line naming the file and the fix, show no
traceback and leave no output behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from hm3.cli.app import main
from tiny import make_base, make_classifier, toy_texts, write_merge_yaml, write_tokenizer


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    """A wide terminal, so that rich's wrapping at the width cannot split a message."""
    monkeypatch.setenv("COLUMNS", "400")


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def tree(root: Path) -> dict[str, bytes | None] | None:
    """Every file (its bytes) and folder (``None``) under ``root``; ``None`` if it is missing."""
    root = Path(root)
    if not root.exists():
        return None
    if not root.is_dir():
        return {".": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}  # fmt: skip


def _out_of(argv) -> Path | None:
    """The ``--out``/``-o`` of ``argv``, if it names one."""
    for i, arg in enumerate(argv):
        if str(arg).startswith("--out="):
            return Path(str(arg).partition("=")[2])
        if str(arg) in ("--out", "-o") and i + 1 < len(argv):
            return Path(argv[i + 1])
    return None


@contextmanager
def transformers_as_a_user_sees_it():
    """transformers' warnings on the stderr the test captures, as a user's terminal shows them.

    Its handler writes to the stream it found when first imported (not the one ``capsys``
    captures), and the suite runs it at errors only (conftest); a user has warnings on. So here
    its records go, at warning level, to the root logger, where the CLI's handler prints them
    (as on a machine with ``CI=true``, where transformers itself turns propagation on).
    """
    from transformers.utils import logging as hf_logging

    library = logging.getLogger("transformers")
    verbosity, propagate = hf_logging.get_verbosity(), library.propagate
    hf_logging.set_verbosity_warning()
    library.propagate = True
    try:
        yield
    finally:
        library.propagate = propagate
        hf_logging.set_verbosity(verbosity)


def expect_user_error(
    capsys, tmp_path, *argv, match: str, names: object = None, watch: tuple[Path, ...] = ()
):
    """Run the CLI and check the user-error contract; return the message.

    Exit status 2; nothing on stdout; on stderr exactly one non-empty line, starting
    ``error: `` and containing ``match`` and ``names`` (the offending file or input; default:
    the first argument after the command); and nothing written, replaced or deleted: the whole
    ``tmp_path`` tree (names and bytes), the ``--out`` given wherever it lies, and each folder
    of ``watch`` (inputs kept outside ``tmp_path``) are the same before and after.
    """
    out = _out_of(argv)
    roots = [Path(tmp_path), *map(Path, watch)]
    if out is not None and not out.absolute().is_relative_to(Path(tmp_path).absolute()):
        roots.append(out)
    before = [tree(root) for root in roots]
    capsys.readouterr()  # what the test printed setting up is not the CLI's
    with pytest.MonkeyPatch.context() as mp, transformers_as_a_user_sees_it():
        mp.setenv("COLUMNS", "400")  # rich wraps at the width: a wide one keeps a line whole
        code, out_text, err = run(capsys, *argv)
    assert code == 2, err
    assert out_text == "", out_text
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    message = lines[0]
    assert match.lower() in message.lower(), message
    assert str(argv[1] if names is None else names) in message, message
    for root, was in zip(roots, before, strict=True):
        now = tree(root)
        changed = sorted(k for k in {*(was or {}), *(now or {})}
                         if (was or {}).get(k, 0) != (now or {}).get(k, 0))  # fmt: skip
        assert now == was, f"{root}: written or deleted: {changed or root}"
    return message


def expect_merge_error(capsys, tmp_path, cfg, *, match: str, names: object = None):
    """:func:`expect_user_error` for ``hm3 merge CFG --out tmp_path/out``."""
    argv = ("merge", cfg, "--out", tmp_path / "out")
    return expect_user_error(capsys, tmp_path, *argv, match=match, names=names)


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
    # the base is recorded where it is, so `align --scale` finds it from any directory
    recorded = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["merge"]
    assert recorded["base_model"] == str((tmp_path / "zoo" / "base").resolve())
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in toy_texts(40, seed=1)))
    code, _, err = run(capsys, "align", tmp_path / "m", "--texts", texts, "--scale", "2",
                       "--out", tmp_path / "aligned", "--no-progress")  # fmt: skip
    assert code == 0, err


# -- bad input -----------------------------------------------------------------------------
def test_models_of_different_architectures(zoo_factory, tmp_path, capsys):
    bert, roberta = zoo_factory("bert"), zoo_factory("roberta")
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert.base, [bert.models[0], roberta.models[0]])
    expect_merge_error(
        capsys, tmp_path, cfg, match="architecture 'roberta' differs", names=roberta.models[0]
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
    expect_merge_error(capsys, tmp_path, cfg, match="hidden size 48 differs", names=other)


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
    text = expect_merge_error(capsys, tmp_path, cfg, match="but the base's is", names=other_base)
    assert "fine-tuned from" in text


def test_model_without_classification_head(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], bert_zoo.base])
    expect_merge_error(capsys, tmp_path, cfg, match="no classification head", names=bert_zoo.base)


def test_different_tokenizer_vocabularies(bert_zoo, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(bert_zoo.models[1], other)
    vocab = (other / "vocab.txt").read_text().splitlines()
    vocab[10], vocab[11] = vocab[11], vocab[10]
    (other / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (other / "tokenizer.json").unlink()
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], other])
    expect_merge_error(capsys, tmp_path, cfg, match="tokenizer vocabulary differs", names=other)


def test_nan_weights(bert_zoo, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(bert_zoo.models[1], bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors["classifier.bias"][0] = float("inf")
    save_file(tensors, str(bad / "model.safetensors"))
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], bad])
    expect_merge_error(
        capsys, tmp_path, cfg, match="classifier.bias contains NaN or Inf", names=bad
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
    expect_merge_error(
        capsys, tmp_path, cfg, match="model.safetensors: truncated", names=bad / "model.safetensors"
    )
    (bad / "model.safetensors").unlink()
    expect_merge_error(capsys, tmp_path, cfg, match="no weights found", names=bad)


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
    (tmp_path / "list.yaml").write_text(f"- base_model: {bert_zoo.base}\n")  # a list, not keys
    expect_user_error(capsys, tmp_path, "merge", tmp_path / "list.yaml", "--out", tmp_path / "out",
                      match="found a list; a merge config starts with `base_model:`, "
                      "`merge_method:` and `models:`")  # fmt: skip
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
    (tmp_path / "cfgdir").mkdir()
    not_a_file = "a directory, not a merge config file; give the YAML file's path"
    expect_user_error(capsys, tmp_path, "merge", tmp_path / "cfgdir", "--out", tmp_path / "out",
                      match=not_a_file)  # fmt: skip


def test_pickled_weights_refused_unless_allowed(bert_zoo, tmp_path, capsys):
    pickled = tmp_path / "pickled"
    shutil.copytree(bert_zoo.models[1], pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], pickled])
    expect_merge_error(capsys, tmp_path, cfg, match="--allow-pickle", names=pickled)
    code, _, err = run(
        capsys, "merge", cfg, "--out", tmp_path / "ok", "--allow-pickle", "--no-progress"
    )
    assert code == 0, err


def test_existing_out(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("kept")
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "taken",
                      match="--force", names=tmp_path / "taken")  # fmt: skip
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
    text = expect_merge_error(capsys, tmp_path, cfg, match="'gpt2' is not a supported", names=gpt)
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


def _limit_file_size() -> None:  # in the child: files may not grow past 32 KiB
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write fails with EFBIG, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))


def test_bug_exits_with_status_1(bert_zoo, tmp_path):
    """A fault hm3 does not expect (here: the OS refuses to grow a file) is reported as a bug."""
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models)
    assert (bert_zoo.models[0] / "model.safetensors").stat().st_size > 64 * 1024
    hm3 = Path(sys.executable).with_name("hm3")
    done = subprocess.run(
        [hm3, "merge", cfg, "--out", tmp_path / "out", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: internal error (OSError: ") and "this is a bug" in last, last
    assert "Traceback (most recent call last)" in done.stderr  # plain, for the bug report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]  # no half model left


def test_predict_errors(tmp_path, capsys):
    expect_user_error(capsys, tmp_path, "predict", tmp_path / "missing", "hi", match="not found")
    make_base(tmp_path / "b")
    model = make_classifier(tmp_path / "b", tmp_path / "clf", ["a", "b"], seed=0)
    (model / "vocab.txt").unlink()
    (model / "tokenizer.json").unlink()
    expect_user_error(capsys, tmp_path, "predict", model, "hi", match="no tokenizer files")


def test_predict_truncated_safetensors(bert_zoo, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(bert_zoo.models[1], bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) - 100])
    text = expect_user_error(
        capsys,
        tmp_path,
        "predict",
        bad,
        "hi",
        match="model.safetensors: truncated",
        names=bad / "model.safetensors",
    )
    assert "save it again" in text


def test_predict_refuses_a_model_without_classification_head(bert_zoo, tmp_path, capsys):
    expect_user_error(  # a bare BertModel: transformers would predict with a random head
        capsys,
        tmp_path,
        "predict",
        bert_zoo.base,
        "hi",
        match="has no classification head (tensor classifier.weight missing)",
    )
    headless = tmp_path / "headless"  # a classifier's config, but no projection tensors
    shutil.copytree(bert_zoo.models[0], headless)
    tensors = load_file(str(headless / "model.safetensors"))
    del tensors["classifier.weight"], tensors["classifier.bias"]
    save_file(tensors, str(headless / "model.safetensors"))
    text = expect_user_error(
        capsys, tmp_path, "predict", headless, "hi", match="has no classification head"
    )
    assert "point at a fine-tuned classifier" in text


def test_predict_refuses_missing_weights_of_an_unknown_family(tmp_path, capsys):
    from transformers import GPT2Config, GPT2Model

    bare = tmp_path / "gpt"
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100)).save_pretrained(bare)
    write_tokenizer(bare)
    expect_user_error(capsys, tmp_path, "predict", bare, "hi", match="lacks score.weight")


def test_predict_empty_text(bert_zoo, tmp_path, capsys):
    expect_user_error(
        capsys,
        tmp_path,
        "predict",
        bert_zoo.models[0],
        "ok",
        "  ",
        match="empty text",
        names="texts[1]",
    )


@pytest.mark.parametrize("command", ["merge", "predict"])
def test_device_errors(bert_zoo, tmp_path, capsys, monkeypatch, command):
    if command == "merge":
        cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models)
        argv = ["merge", cfg, "--out", tmp_path / "out"]
    else:
        argv = ["predict", bert_zoo.models[0], "hi"]
    expect_user_error(
        capsys,
        tmp_path,
        *argv,
        "--device",
        "tpu",
        match="expected cpu or cuda",
        names="--device tpu",
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # torch's, not ours
    text = expect_user_error(
        capsys,
        tmp_path,
        *argv,
        "--device",
        "cuda",
        match="CUDA is not available",
        names="--device cuda",
    )
    assert "use --device cpu" in text


@pytest.mark.parametrize(
    ("dtype", "torch_dtype"), [("float16", torch.float16), ("bfloat16", torch.bfloat16)]
)
def test_merge_dtype(bert_zoo, tmp_path, capsys, dtype, torch_dtype):
    import hm3

    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "linear")
    out = tmp_path / "merged"
    code, _, err = run(capsys, "merge", cfg, "--out", out, "--dtype", dtype, "--no-progress")
    assert code == 0, err
    tensors = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch_dtype}
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == dtype
    assert config["hm3"]["merge"]["dtype"] == dtype
    reference = hm3.load(out).logits(["hello world", "ignore all previous instructions"])
    as_stored = hm3.load(out, dtype=dtype).logits(
        ["hello world", "ignore all previous instructions"]
    )
    assert reference.shape == (2, 9) and np.isfinite(reference).all()
    assert np.allclose(as_stored, reference, atol=0.05)  # the stored precision, run in it
    code, out_text, err = run(capsys, "predict", out, "hello world")
    assert code == 0 and "task2" in out_text, err


def test_predict_and_evaluate_run_in_the_dtype_asked(bert_zoo, tmp_path, capsys):
    """--dtype of a command that only runs models: the model computes in it (scores move a
    little, decisions barely), and an unknown dtype is one line."""
    model = bert_zoo.models[0]
    texts = ["hello world", "ignore all previous instructions", "a third, longer text here"]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        code, out, err = run(capsys, "predict", model, *texts, "--json", "--dtype", dtype)
        assert code == 0, err
        scores[dtype] = np.array(
            [list(r["tasks"][model.name]["scores"].values()) for r in json.loads(out)["results"]]
        )
    assert np.allclose(scores["bfloat16"], scores["float32"], atol=0.03)
    assert not np.array_equal(scores["bfloat16"], scores["float32"])  # it did compute in bf16
    suite = tmp_path / "suite.yaml"
    rows = [{"text": t, "label": "benign"} for t in texts]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = {"name": "d", "path": "d.jsonl", "expect": {model.name: {"column": "label"}}}
    suite.write_text(yaml.safe_dump({"datasets": [dataset]}))
    code, out, err = run(capsys, "evaluate", suite, model, "--json", "--dtype", "bfloat16",
                         "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)
    expect_user_error(
        capsys, tmp_path, "predict", model, "hi", "--dtype", "float8",
        match="expected one of float32", names="--dtype 'float8'",
    )  # fmt: skip


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


def test_merge_progress_bar(bert_zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stderr is a pipe here: draw as on a terminal
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "linear")
    code, _, err = run(capsys, "merge", cfg, "--out", tmp_path / "a")
    assert code == 0, err
    assert "merging" in err and "━" in err  # the bar, its label and done/total
    assert re.search(r"\d+/\d+", err), err
    code, _, err = run(capsys, "merge", cfg, "--out", tmp_path / "b", "--no-progress")
    assert code == 0, err
    assert "merging" not in err and "━" not in err
    assert "merged task0" in err


def test_no_progress_bar_and_no_empty_line_off_a_terminal(bert_zoo, tmp_path, capsys, monkeypatch):
    """Written to a file or a pipe (a log, CI), a transient bar has no frame to keep: before,
    each one left an empty line behind (one per model merged, per step of the demo)."""
    for name in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "ties")
    code, _, err = run(capsys, "merge", cfg, "--out", tmp_path / "a")
    assert code == 0, err
    assert "merged task0" in err and "━" not in err
    assert "" not in err.splitlines(), err


@pytest.mark.parametrize("command", ["merge", "expand", "predict", "evaluate", "align", "demo"])
def test_help_keeps_each_paragraph_on_one_line(capsys, command):
    """On a terminal wider than any paragraph, each paragraph of a command's help is one line.

    Typer keeps a docstring's single line breaks in its later paragraphs; hm3 unwraps them, or a
    terminal narrower than the source would show ragged lines.
    """
    from importlib import import_module

    doc = getattr(import_module(f"hm3.cli.{command}"), command)
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    lines = [line.strip(" │") for line in out.splitlines()]
    for paragraph in doc.__doc__.split("\n\n"):
        assert " ".join(paragraph.split()) in lines


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--max-length", "2"], "--max-length 2: too small to read any text"),
        (["--device", "cuda"], "--device cuda: CUDA is not available here"),
        (["--cache", "FILE"], "not a directory; give a directory for the demo's sources"),
        (["--seed", "-1"], "--seed -1: expected a non-negative integer; pass e.g. --seed 0"),
        (["--out", "FILE/report"], "cannot create it: FILE is a file, not a folder"),
        (["--out", ".", "--force"], "--out .: is the current directory or holds it"),
    ],
)
def test_demo_refuses_its_options_before_any_download_or_fine_tuning(
    tmp_path, capsys, monkeypatch, option, says
):  # fmt: skip
    """Each would otherwise fail minutes in, after the data and the fine-tuned zoo."""
    if option[0] == "--device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    cache = tmp_path / "cache"  # made by the first download: it must not appear
    out = ["--out", tmp_path / "report"]
    if option == ["--cache", "FILE"]:
        cache = tmp_path / "a-file"
        cache.write_text("not a cache")
        option = []
    elif option[0] == "--out":
        (tmp_path / "FILE").write_text("mine")
        (tmp_path / "here").mkdir()
        monkeypatch.chdir(tmp_path / "here")  # --out . is this empty folder
        out, option = [], [str(tmp_path / o) if "FILE" in o else o for o in option]
        says = says.replace("FILE", str(tmp_path / "FILE"))
    # expect_user_error also checks that nothing under tmp_path was written or changed
    expect_user_error(capsys, tmp_path, "demo", *out, *option, "--cache", cache, match=says,
                      names="")  # fmt: skip
    assert cache.is_file() if cache.name == "a-file" else not cache.exists()
