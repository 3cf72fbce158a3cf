"""The library's front doors refuse what they cannot use, in one line, before any harm.

Each test is one mistake a caller of :mod:`hm3` makes in Python (no command line to parse the
values first): a string where a flag goes, torch's ``device=0``, no texts, a broken checkpoint,
an ``out`` under a file, a dict where a typed object goes, a non-integer ``max_texts``. Each
gives an :class:`~hm3.errors.Hm3Error` that names the argument, not a crash deep inside.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

import hm3
from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from hm3.model.windows import Windows
from hm3.options import RunOptions
from test_alignment import write_texts
from test_cli import expect_user_error
from tiny import toy_texts, write_merge_yaml


def _config(tmp_path, zoo, **extra) -> MergeConfig:
    return MergeConfig.from_yaml(write_merge_yaml(tmp_path / "m.yaml", zoo.base, zoo.models,
                                                  **extra))  # fmt: skip


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_flags_must_be_bools_so_force_false_keeps_an_output(bert_zoo, tmp_path):
    for name in ("force", "progress", "allow_pickle"):
        for value in ("false", 0, None):
            with pytest.raises(Hm3Error, match=f"{name} .*: expected a bool, not "):
                RunOptions(**{name: value})
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(Hm3Error, match="force 'false': expected a bool, not str") as exc:
        hm3.merge(_config(tmp_path, bert_zoo), out, force="false", progress=False)
    _one_line(exc)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert RunOptions(force=True, progress=False, allow_pickle=True).force


def test_device_must_be_a_device_name(bert_ties_merged):
    for bad in (0, 1, False, 0.0):
        with pytest.raises(Hm3Error, match=f"device {bad!r}: expected a string such as 'cpu'"):
            RunOptions(device=bad)
    for blank in ("", "  "):
        with pytest.raises(Hm3Error, match=r"device='.*': expected 'cpu' or 'cuda'"):
            RunOptions(device=blank)
    with pytest.raises(Hm3Error, match="device 0: expected a string") as exc:
        hm3.load(bert_ties_merged, device=0)  # torch's GPU 0, not the CPU
    _one_line(exc)
    assert RunOptions(device=None).device == "cpu"  # None is the default
    assert hm3.load(bert_ties_merged, device=None).device.type == "cpu"


def test_no_texts_give_empty_results(bert_ties_merged):
    clf = hm3.load(bert_ties_merged)
    k = clf.tasks[-1].end
    logits = clf.logits([])
    assert logits.shape == (0, k) and logits.dtype == np.float32
    for windows in (None, Windows()):
        assert clf.predict([], windows=windows) == []
        probs = clf.predict_proba([], windows=windows)
        assert list(probs) == [t.name for t in clf.tasks]
        for task in clf.tasks:
            assert probs[task.name].shape == (0, len(task.labels))
            assert probs[task.name].dtype == np.float32
    assert clf.window_counts([], Windows()) == []
    assert len(clf.predict(["some text"])) == 1  # texts still run as before


def test_load_refuses_a_config_without_model_type_and_a_broken_tokenizer_file(
    bert_ties_merged, tmp_path, capsys
):
    untyped = shutil.copytree(bert_ties_merged, tmp_path / "untyped")
    config = json.loads((untyped / "config.json").read_text())
    config.pop("model_type")
    (untyped / "config.json").write_text(json.dumps(config))
    with pytest.raises(Hm3Error, match=r"config.json: no model_type, .* add the base model's") as e:
        hm3.load(untyped)
    _one_line(e)
    expect_user_error(capsys, tmp_path, "predict", untyped, "hello",
                      match="no model_type", names=untyped / "config.json")  # fmt: skip
    config["model_type"] = "bert-from-the-future"
    (untyped / "config.json").write_text(json.dumps(config))
    expect_user_error(capsys, tmp_path, "predict", untyped, "hello",
                      match="'bert-from-the-future' is not an architecture transformers",
                      names="upgrade transformers")  # fmt: skip
    broken = shutil.copytree(bert_ties_merged, tmp_path / "broken")
    (broken / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(Hm3Error, match=r"tokenizer cannot be loaded .* copy the tokenizer") as e:
        hm3.load(broken)
    _one_line(e)
    expect_user_error(capsys, tmp_path, "predict", broken, "hello",
                      match="its tokenizer cannot be loaded", names=broken)  # fmt: skip


def test_merge_with_align_to_an_out_under_a_file_is_a_user_error(bert_zoo, tmp_path):
    texts = tmp_path / "texts.jsonl"
    write_texts(texts, toy_texts(20, seed=1))
    before = sorted(p.name for p in tmp_path.iterdir())
    out = texts / "sub" / "merged"  # its parent runs through a file
    for extra in ({}, {"align": {"texts": str(texts)}}):  # the plain merge and the align path
        with pytest.raises(
            Hm3Error, match=f"cannot create it: {texts} is a file, not a folder; ch"
        ) as e:
            hm3.merge(_config(tmp_path, bert_zoo, **extra), out, progress=False)
        assert _one_line(e).startswith(f"out={str(out)!r}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*before, "m.yaml"})


def test_a_dict_or_a_path_where_a_typed_object_goes_is_named(bert_zoo, bert_ties_merged, tmp_path):
    data = {"base_model": str(bert_zoo.base), "merge_method": "ties",
            "models": [{"model": str(m)} for m in bert_zoo.models]}  # fmt: skip
    for config, given in ((data, "dict"), (str(tmp_path / "m.yaml"), "str")):
        with pytest.raises(Hm3Error, match=f"config: expected a hm3.MergeConfig, got {given}; "
                           "build it with MergeConfig.from_yaml"):  # fmt: skip
            hm3.merge(config, tmp_path / "out", progress=False)
    texts = tmp_path / "t.jsonl"
    write_texts(texts, toy_texts(8))
    calls = {
        "merge": lambda o: hm3.merge(_config(tmp_path, bert_zoo), tmp_path / "out", options=o),
        "align": lambda o: hm3.align(bert_ties_merged, texts, tmp_path / "out", options=o),
        "load": lambda o: hm3.load(bert_ties_merged, options=o),
    }
    for call in calls.values():
        with pytest.raises(Hm3Error, match=r"options: expected a hm3.options.RunOptions, got dict"):
            call({"progress": False})
    clf = hm3.load(bert_ties_merged, options=RunOptions(progress=False))
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(Hm3Error, match=r"windows: expected a hm3.Windows or None"
                           r", got dict"):  # fmt: skip
            method(["hello"], windows={"stride": 8})
    assert not (tmp_path / "out").exists()


def test_a_path_texts_or_a_batch_size_of_the_wrong_type_is_one_line(bert_zoo, bert_ties_merged,
                                                                     tmp_path):  # fmt: skip
    texts = tmp_path / "t.jsonl"
    write_texts(texts, toy_texts(8))
    calls = {
        "path": lambda v: hm3.load(v),
        "merge config": lambda v: hm3.MergeConfig.from_yaml(v),
        "suite": lambda v: hm3.load_suite(v),
        "out": lambda v: hm3.merge(_config(tmp_path, bert_zoo), v, progress=False),
        "merged_dir": lambda v: hm3.align(v, texts, tmp_path / "o", progress=False),
        "texts_file": lambda v: hm3.align(bert_ties_merged, v, tmp_path / "o", progress=False),
    }
    if importlib.util.find_spec("onnxruntime"):  # the export extra's entry points
        from hm3.export.api import export_onnx
        from hm3.export.runtime import load_onnx

        calls["export model"] = lambda v: export_onnx(v, tmp_path / "o", progress=False)
        calls["export out"] = lambda v: export_onnx(bert_ties_merged, v, progress=False)
        calls["onnx path"] = lambda v: load_onnx(v)
    for what, call in calls.items():
        for bad in (None, 5, b"dir"):
            with pytest.raises(Hm3Error) as e:
                call(bad)
            name = what.split()[-1] if what.startswith(("export", "onnx")) else what
            want = f"{name}: expected a path (str or pathlib.Path), got {type(bad).__name__}"
            assert _one_line(e) == want
    clf = hm3.load(bert_ties_merged)
    with pytest.raises(Hm3Error) as e:  # a loaded model where its directory was meant
        hm3.align(clf, texts, tmp_path / "o", progress=False)
    want = "got Classifier; give its directory (merged_dir=model.path)"
    assert _one_line(e) == f"merged_dir: expected a path (str or pathlib.Path), {want}"
    assert not (tmp_path / "o").exists()
    for bad in (None, 5, b"good"):
        with pytest.raises(Hm3Error) as e:
            clf.predict(bad)
        assert _one_line(e) == (f"texts: expected a string or a list of strings, got "
                                f"{type(bad).__name__}")  # fmt: skip
    for bad in ("2", 1.5, None, True, 0):
        with pytest.raises(Hm3Error, match=f"batch_size {bad!r}: expected a whole number >= 1"):
            clf.predict(["hello"], batch_size=bad)
    assert clf.predict(["hello"], batch_size=np.int64(2))[0].tasks  # a numpy integer is whole
    with pytest.raises(Hm3Error) as e:
        hm3.align(bert_ties_merged, texts, tmp_path / "o", originals=["task0"])
    assert _one_line(e).startswith("originals: expected a dict of task -> directory, got list")
    with pytest.raises(Hm3Error, match=r"dtype: not read here \(the fit runs in float32"):
        hm3.align(bert_ties_merged, texts, tmp_path / "o", dtype="float16")
    assert not (tmp_path / "o").exists()
    assert hm3.align(bert_ties_merged, texts, tmp_path / "o", dtype=None).path.is_dir()


def test_a_home_relative_path_is_expanded(bert_ties_merged, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(bert_ties_merged.parent))
    assert hm3.load(f"~/{bert_ties_merged.name}").path == bert_ties_merged


def test_align_max_texts_must_be_a_whole_number(bert_ties_merged, tmp_path):
    texts = tmp_path / "t.jsonl"
    write_texts(texts, toy_texts(8))
    for bad in ("5", 2.5, True, 0, -1):
        with pytest.raises(Hm3Error, match=f"max_texts {bad!r}: expected a whole number >= 1"):
            hm3.align(bert_ties_merged, texts, tmp_path / "out", max_texts=bad, progress=False)
    assert not (tmp_path / "out").exists()
    # a numpy integer is a whole number: taken, and recorded as a plain one
    result = hm3.align(bert_ties_merged, texts, tmp_path / "out", max_texts=np.int64(6),
                       batch_size=np.int64(4), progress=False)  # fmt: skip
    record = json.loads((result.path / "config.json").read_text())["hm3"]["align"]
    assert record["max_texts"] == 6 and record["n_texts"] == 6
    assert type(RunOptions(batch_size=np.int64(4)).batch_size) is int


def test_a_max_length_with_no_room_for_text_is_refused(bert_ties_merged, tmp_path, capsys):
    # [CLS] and [SEP] take two tokens: at 2 every text would read the same; at 1 the tokenizer
    # would not truncate at all (a text past the positions, a crash)
    for n in (1, 2):
        with pytest.raises(Hm3Error, match=f"max_length={n}: too small .* at least 3") as e:
            hm3.load(bert_ties_merged, max_length=n).predict(["some words " * 80])
        _one_line(e)
    expect_user_error(capsys, tmp_path, "predict", bert_ties_merged, "some words " * 80,
                      "--no-windows", "--max-length", "1",
                      match="too small to read any text", names="--max-length 1")  # fmt: skip
    assert len(hm3.load(bert_ties_merged, max_length=3).predict(["some words " * 80])) == 1
