"""A message from the Python API names the fix as a Python caller writes it, never as a flag.

``hm3.merge(cfg, out)`` with an existing ``out`` says ``force=True``, not ``--force``; the same
mistake on the command line still says ``--force`` (:func:`hm3.errors.spell`). Each test makes
one mistake both ways, with real calls on the tiny random checkpoints, and checks both messages.
Two mistakes that once slipped through are here too: a loaded model given as an original to
:func:`hm3.align` (one :class:`~hm3.errors.Hm3Error`, not a ``TypeError``), and a model named
``original`` in :func:`hm3.evaluate` (reported as the originals; now refused).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hm3
from hm3.errors import Hm3Error
from hm3.evaluation.suite import Suite
from hm3.merging.config import MergeConfig
from hm3.model.windows import Windows
from hm3.options import RunOptions
from test_cli import expect_user_error, run
from tiny import toy_texts, write_merge_yaml

_FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _python(call) -> str:
    """The one-line message ``call()`` raises from Python; it names no command-line flag."""
    with pytest.raises(Hm3Error) as exc:
        call()
    message = str(exc.value)
    assert "\n" not in message, message
    assert not _FLAG.search(message), message
    return message


def _texts(tmp_path: Path, key: str = "text") -> Path:
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({key: t}) + "\n" for t in toy_texts(8)), "utf-8")
    return path


def _suite(tmp_path: Path, expect: dict) -> Path:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in toy_texts(4)), "utf-8")
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps({"datasets": [{"name": "d", "path": "d.jsonl", "expect": expect}]}))
    return path


def test_an_existing_out_names_out_and_force(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models)
    taken = tmp_path / "taken"
    taken.mkdir()
    message = _python(lambda: hm3.merge(MergeConfig.from_yaml(cfg), taken, progress=False))
    assert message == f"out={str(taken)!r}: already exists; choose another path or pass force=True"
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", taken,
                      match="choose another path or pass --force",
                      names=f"--out {taken}:")  # fmt: skip


def test_pickled_weights_name_allow_pickle(bert_zoo, tmp_path, capsys):
    model = tmp_path / "pickled"
    shutil.copytree(bert_zoo.models[0], model)
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    message = _python(lambda: hm3.load(model))
    assert "or pass allow_pickle=True to load them" in message
    assert hm3.load(model, allow_pickle=True).predict(["hello"])[0].tasks  # the fix works
    expect_user_error(capsys, tmp_path, "predict", model, "hello",
                      match="or pass --allow-pickle to load them", names=model)  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: device='cuda' is no mistake")
def test_cuda_where_there_is_none_names_device(bert_zoo, tmp_path, capsys):
    message = _python(lambda: hm3.load(bert_zoo.models[0], device="cuda"))
    assert message == "device='cuda': CUDA is not available here; use device='cpu'"
    expect_user_error(capsys, tmp_path, "predict", bert_zoo.models[0], "hello", "--device", "cuda",
                      match="CUDA is not available here; use --device cpu",
                      names="--device cuda:")  # fmt: skip


def test_bad_run_options_name_the_keyword(bert_zoo, tmp_path, capsys):
    assert _python(lambda: RunOptions(device="tpu")).startswith("device='tpu': expected 'cpu'")
    assert _python(lambda: RunOptions(dtype="float8")).startswith("dtype 'float8': expected one")
    for name in ("batch_size", "max_length"):
        message = _python(lambda name=name: RunOptions(**{name: 0}))
        assert message == f"{name} 0: expected a whole number >= 1"
    clf = hm3.load(bert_zoo.models[0])
    message = _python(lambda: clf.predict(["hello"], batch_size=0))
    assert message == "batch_size 0: expected a whole number >= 1"
    # the command line refuses the value while parsing, naming the flag
    code, _, err = run(capsys, "predict", bert_zoo.models[0], "hello", "--batch-size", "0")
    assert code == 2 and "--batch-size" in err
    expect_user_error(capsys, tmp_path, "predict", bert_zoo.models[0], "hello", "--device", "tpu",
                      match="expected cpu or cuda", names="--device tpu:")  # fmt: skip


def test_a_max_length_too_small_names_max_length(bert_zoo, tmp_path, capsys):
    model = bert_zoo.models[0]
    message = _python(lambda: hm3.load(model, max_length=1).predict(["hello"]))
    assert message.startswith("max_length=1: too small to read any text")
    message = _python(lambda: hm3.load(model, max_length=2).predict(["hi"], windows=Windows()))
    assert message.startswith("max_length=2: too small for windows")
    expect_user_error(capsys, tmp_path, "predict", model, "hello", "--no-windows",
                      "--max-length", "1", match="too small to read any text",
                      names="--max-length 1:")  # fmt: skip


def test_window_options_name_the_windows_keywords(bert_zoo, tmp_path, capsys):
    model = bert_zoo.models[0]
    message = _python(lambda: Windows(combine="mean", default_labels={"task0": "benign"}))
    assert message == (
        "default_labels={'task0': 'benign'}: default labels apply to combine='max' only "
        "(combine='mean' uses no default label); drop default_labels or use combine='max'"
    )
    assert _python(lambda: Windows(combine="median")).startswith("combine='median': expected")
    assert _python(lambda: Windows(stride=0)).startswith("stride=0: expected a positive number")
    clf = hm3.load(model, max_length=16)
    message = _python(lambda: clf.predict(["hello"], windows=Windows(stride=15)))
    assert message.startswith("stride=15: expected at most 14, the content tokens of a window "
                              "(max_length=16 minus 2 special tokens)")  # fmt: skip
    unknown = Windows(default_labels={"nope": "benign"})
    message = _python(lambda: clf.predict(["hello"], windows=unknown))
    assert message.startswith("default_labels={'nope': 'benign'}: the model has no task 'nope'")
    for argv, match in (
        (["--combine", "mean", "--default-label", "task0=benign"],
         "--default-label task0=benign: default labels apply to --combine max only (--combine "
         "mean uses no default label); drop --default-label or use --combine max"),
        (["--stride", "99"], "--stride 99: expected at most"),
        (["--default-label", "nope=benign"], "--default-label nope=benign: the model has no"),
    ):  # fmt: skip
        expect_user_error(capsys, tmp_path, "predict", model, "hello", *argv, match=match,
                          names=argv[-2])  # fmt: skip


def test_align_names_its_own_keywords(bert_ties_merged, bert_zoo, tmp_path, capsys):
    texts, out = _texts(tmp_path), tmp_path / "out"

    def align(**kwargs):
        return lambda: hm3.align(bert_ties_merged, texts, out, progress=False, **kwargs)

    message = _python(align(text_column="txt"))
    assert message == (f"texts_file={str(texts)!r}: no column 'txt'; columns in the file: text; "
                       "set text_column to one of them")  # fmt: skip
    assert _python(align(ridge=-1)).startswith("ridge=-1: expected a finite number >= 0")
    assert _python(align(scale="big")).startswith("scale='big': expected a finite number > 0")
    assert _python(align(max_texts=0)) == "max_texts 0: expected a whole number >= 1"
    nowhere = tmp_path / "nowhere"
    message = _python(align(originals={"task0": nowhere}))
    assert (
        message == f"originals={{'task0': {str(nowhere)!r}}}: directory not found; check the path"
    )
    message = _python(align(originals={"toxicity": bert_zoo.models[0]}))
    assert message.startswith(f"originals={{'toxicity': ...}}: {bert_ties_merged} has no task")
    assert not out.exists()
    argv = ("align", bert_ties_merged, "--texts", texts, "--out", out, "--no-progress")
    expect_user_error(capsys, tmp_path, *argv, "--text-column", "txt",
                      match="no column 'txt'; columns in the file: text; set --text-column to one",
                      names=f"--texts {texts}:")  # fmt: skip
    expect_user_error(
        capsys,
        tmp_path,
        *argv,
        "--originals",
        f"task0={nowhere}",
        match="directory not found",
        names=f"--originals task0={nowhere}:",
    )
    expect_user_error(
        capsys,
        tmp_path,
        *argv,
        "--max-texts",
        "0",
        match="expected a whole number >= 1",
        names="--max-texts 0:",
    )


def test_a_loaded_model_as_an_original_is_one_clear_error(bert_ties_merged, bert_zoo, tmp_path):
    clf = hm3.load(bert_zoo.models[0])
    out = tmp_path / "out"
    message = _python(
        lambda: hm3.align(bert_ties_merged, _texts(tmp_path), out, originals={"task0": clf})
    )
    assert message == (
        "originals['task0']: expected a path (str or pathlib.Path), got Classifier; give its "
        "directory (originals['task0']=model.path)"
    )
    assert not out.exists()


def test_evaluate_names_originals_and_restricted(bert_zoo, tmp_path, capsys):
    model = bert_zoo.models[0]
    suite_file = _suite(tmp_path, {"toxicity": "benign"})
    suite = hm3.load_suite(suite_file)
    message = _python(lambda: hm3.evaluate(suite, {"m": model}, progress=False))
    assert message.endswith("fix the name, add a model that answers it (originals={TASK: DIR}), "
                            "or evaluate only the tasks the models answer "
                            "(suite.restricted([TASK, ...]))")  # fmt: skip
    assert callable(getattr(Suite, "restricted", None))  # the method the message names
    text = expect_user_error(capsys, tmp_path, "evaluate", suite_file, model, "--no-progress",
                             match="which no model being evaluated answers",
                             names="(--originals TASK=DIR)")  # fmt: skip
    assert text.endswith("the tasks the models answer (--tasks)")


def test_evaluate_names_the_originals_keyword(bert_zoo, tmp_path, capsys):
    model, other = bert_zoo.models[:2]
    suite_file = _suite(tmp_path, {"task0": "benign"})
    suite = hm3.load_suite(suite_file)
    message = _python(lambda: hm3.evaluate(suite, {"m": model}, originals={"toxicity": other}))
    assert message.startswith("originals={'toxicity': …}: no model answers task 'toxicity'")
    message = _python(lambda: hm3.evaluate(suite, {"m": model}, bootstrap=10))
    assert message.endswith("pass the originals (originals={TASK: DIR}) or set bootstrap=0")
    nope = Windows(default_labels={"nope": "benign"})
    message = _python(lambda: hm3.evaluate(suite, {"m": model}, windows=nope, progress=False))
    assert message.startswith("default_labels={'nope': ...}: no evaluated model answers")
    expect_user_error(capsys, tmp_path, "evaluate", suite_file, model, "--bootstrap", "10",
                      match="pass the originals (--originals TASK=DIR) or drop --bootstrap",
                      names="--bootstrap")  # fmt: skip
    expect_user_error(
        capsys,
        tmp_path,
        "evaluate",
        suite_file,
        model,
        "--windows",
        "--default-label",
        "nope=benign",
        "--no-progress",
        match="no evaluated model answers",
        names="--default-label nope=...:",
    )


def test_a_model_named_original_is_refused_even_without_originals(bert_zoo, tmp_path, capsys):
    """Else it would be reported as the originals (``kind: original``)."""
    model = bert_zoo.models[0]
    suite_file = _suite(tmp_path, {"task0": "benign"})
    suite = hm3.load_suite(suite_file)
    for originals in (None, {"task0": bert_zoo.models[0]}):
        message = _python(
            lambda originals=originals: hm3.evaluate(
                suite, {"original": hm3.load(model)}, originals=originals, progress=False
            )
        )
        assert message == ("models: 'original' names the originals; rename it "
                           "(models={'NAME': ...})")  # fmt: skip
    kinds = [m.kind for m in hm3.evaluate(suite, {"mine": model}, progress=False).models]
    assert kinds == ["model"]
    expect_user_error(capsys, tmp_path, "evaluate", suite_file, f"original={model}",
                      "--no-progress", match="rename it (NAME=DIR)",
                      names="models: 'original'")  # fmt: skip
