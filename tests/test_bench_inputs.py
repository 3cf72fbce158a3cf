"""``hm3 bench``'s inputs: what it refuses before the first run, and what it hands each run.

Tiny real models (the shared zoo and a ``hm3.merge`` of it). A refusal must come before any
worker process starts (``subprocess.run`` is made to fail), as one line with exit 2; the one
accepted run (windows, default labels, a max length beyond the models' positions) is a real
bench with worker processes, kept tiny (3 texts, one round).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

import hm3
from hm3.bench.worker import check_models
from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.export.runtime import read_export
from hm3.model.labels import Task
from hm3.model.windows import Windows
from test_bench import run
from test_cli import transformers_as_a_user_sees_it
from tiny import toy_texts


@pytest.fixture(scope="module")
def setup(zoo_of, bert_ties_merged, tmp_path_factory):
    """The merged model, ``--originals`` arguments (task2's original under another directory
    name, so its one task is not called task2) and a texts file with one long text."""
    zoo, merged = zoo_of("bert"), bert_ties_merged  # the shared TIES merge of that zoo
    root = tmp_path_factory.mktemp("bench-inputs")
    other = shutil.copytree(zoo.models[2], root / "renamed")
    texts = root / "texts.jsonl"
    rows = [{"text": t} for t in toy_texts(2, seed=1)] + [{"text": " ".join(["good"] * 200)}]
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    originals = {"task0": zoo.models[0], "task1": zoo.models[1], "task2": other}
    return merged, originals, texts


def _argv(merged, originals, *extra):
    pairs = [f"--originals={task}={path}" for task, path in originals.items()]
    return ["bench", "--merged", merged, *pairs, "--no-progress", "--repeats", "1", *extra]


def refused(capsys, monkeypatch, *argv) -> str:
    """The one error line of a bench refused before any worker process started."""

    def no_runs(*args, **kwargs):
        raise AssertionError("a worker process started before the inputs were checked")

    monkeypatch.setattr(subprocess, "run", no_runs)
    with transformers_as_a_user_sees_it():
        code, out, err = run(capsys, monkeypatch, *argv)
    assert code == 2 and not out and "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def accepted(setup):
    """One real bench: windows, a default label for every task, --max-length 4096."""
    merged, originals, texts = setup
    labels = {t.name: t.labels for t in hm3.load(merged).tasks}
    argv = _argv(
        merged, originals, "--texts", texts, "--threads", "1", "--json", "--windows",
        "--max-length", "4096", "--default-label", f"task0={labels['task0'][1]}",
        "--default-label", f"task1={labels['task1'][2]}", "--default-label", "task2=y",
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exc, redirect_stdout(out), redirect_stderr(err):
        main([str(a) for a in argv])
    return exc.value.code, out.getvalue(), err.getvalue()


# 1 ---------------------------------------------------------------------------------------------
def test_default_labels_go_to_each_original_under_its_own_names(setup, accepted):
    """Every --default-label reached its original renamed (task name, placeholder labels by
    position), not the same map to every original."""
    merged, originals, _ = setup
    code, _, err = accepted
    assert code == 0, err
    from hm3.bench.worker import model_windows

    ours = hm3.load(merged).tasks
    own = hm3.load(originals["task2"]).tasks[0]
    assert own.name == "renamed"
    rule = Windows(default_labels={"task0": ours[0].labels[1], "task2": "y"})
    assert model_windows(rule, [(ours[2], own)])["default_labels"] == {"renamed": "y"}
    assert model_windows(rule, [(ours[1], ours[1])])["default_labels"] == {}
    # an original without label names (a merge config named them): by position
    tox = Task("tox", ("non_toxic", "toxic", "hate"), 0, 3)
    mine = Task("tox_model", ("class_0", "class_1", "class_2"), 0, 3)
    rule = Windows(default_labels={"tox": "hate"})
    assert model_windows(rule, [(tox, mine)])["default_labels"] == {"tox_model": "class_2"}


# 3 ---------------------------------------------------------------------------------------------
def test_an_unknown_model_type_is_one_line_exit_2(setup, capsys, monkeypatch, tmp_path):
    merged, originals, texts = setup
    weird = shutil.copytree(originals["task2"], tmp_path / "weird")
    config = json.loads((weird / "config.json").read_text())
    (weird / "config.json").write_text(json.dumps({**config, "model_type": "foo"}))
    line = refused(
        capsys, monkeypatch, *_argv(merged, {**originals, "task2": weird}), "--texts", texts
    )
    assert f"--originals task2 {weird}" in line and "model_type 'foo'" in line
    assert "upgrade transformers" in line
    monkeypatch.undo()  # worker processes again
    from hm3.bench.worker import RunSpec, spawn

    spec = RunSpec(models=[str(weird)], runtime="torch", texts=str(texts), options={})
    with pytest.raises(Hm3Error, match=r"model_type 'foo'.*upgrade transformers") as exc:
        spawn(spec, 1)  # the worker's own check, passed back as its one line
    assert str(weird) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_worker_spells_its_fix_as_its_caller_does(setup):
    """A worker process's own refusal names the option as the parent's caller writes it: the
    flag under a CLI command, the keyword from Python."""
    from hm3.bench.worker import RunSpec, spawn
    from hm3.errors import cli_spelling

    merged, _, texts = setup
    spec = RunSpec(models=[str(merged)], runtime="torch", texts=str(texts),
                   options={"device": "cuda"})  # fmt: skip
    with pytest.raises(Hm3Error, match=r"^device='cuda': CUDA is not available here; use device="):
        spawn(spec, 1)
    with cli_spelling(), pytest.raises(Hm3Error, match=r"^--device cuda: .*use --device cpu$"):
        spawn(spec, 1)


# 4 ---------------------------------------------------------------------------------------------
def test_exports_and_model_files_are_checked_before_any_run(
    setup, float_export, capsys, monkeypatch, tmp_path
):  # fmt: skip
    merged, originals, texts = setup
    fake = tmp_path / "fake-onnx"
    fake.mkdir()
    shutil.copy(merged / "config.json", fake)
    base = _argv(merged, originals, "--texts", texts)
    line = refused(capsys, monkeypatch, *base, "--onnx", fake)
    assert "(no model.onnx)" in line and "config.json" not in line
    notok = tmp_path / "notok"
    notok.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(merged / name, notok)
    line = refused(capsys, monkeypatch, *_argv(notok, originals, "--texts", texts))
    assert f"--merged {notok}: no tokenizer files" in line
    with pytest.raises(Hm3Error, match=r"\(no model.onnx\)") as exc:
        read_export(merged)  # a torch model: exporting into it would overwrite it
    assert f"--out {merged}`" not in str(exc.value) and f"hm3 export onnx {merged}" in str(
        exc.value
    )
    cut = shutil.copytree(float_export, tmp_path / "cut")  # was an internal error mid-bench
    (cut / "model.onnx").write_bytes((cut / "model.onnx").read_bytes()[:1000])
    line = refused(capsys, monkeypatch, *base, "--onnx", cut)
    assert f"{cut}/model.onnx: ONNX Runtime cannot load it" in line
    (cut / "model.onnx").write_bytes((float_export / "model.onnx").read_bytes())
    (cut / "vocab.txt").unlink()
    (cut / "tokenizer.json").unlink(missing_ok=True)
    line = refused(capsys, monkeypatch, *base, "--onnx", cut)
    assert f"error: {cut}: no tokenizer files" in line
    # torch runs in bfloat16, exports in their own precision: not refused by the export's check
    check_models({}, [float_export], hm3.RunOptions(dtype="bfloat16"))


def test_one_string_is_one_text_and_bad_texts_are_refused(setup, monkeypatch):
    """bench(texts="hello") timed five one-letter texts."""
    from hm3.bench import api

    merged, originals, _ = setup
    seen = []

    def one_run(spec, threads):
        seen.append(json.loads(Path(spec.texts).read_text()))
        return measured(spec, threads)

    monkeypatch.setattr(api, "spawn", one_run)
    result = api.bench(merged, originals, "hello", repeats=1, options=hm3.RunOptions(
        progress=False, max_length=32))  # fmt: skip
    assert result.setup.texts == 1 and seen and all(texts == ["hello"] for texts in seen)
    with pytest.raises(Hm3Error, match=r"^texts\[1\]: empty text"):
        api.bench(merged, originals, ["fine", " "], repeats=1)
    with pytest.raises(Hm3Error, match=r"^repeats=0: expected at least 1"):
        api.bench(merged, originals, ["fine"], repeats=0)


# 5 ---------------------------------------------------------------------------------------------
def test_text_column_is_refused_with_a_suite(setup, capsys, monkeypatch, tmp_path):
    merged, originals, _ = setup
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "hello"}) + "\n", encoding="utf-8")
    suite = tmp_path / "suite.yaml"
    data = {"name": "d", "path": "d.jsonl", "expect": {"task0": "benign"}}
    suite.write_text(json.dumps({"datasets": [data]}), encoding="utf-8")
    argv = _argv(merged, originals, "--suite", suite, "--text-column", "nowhere")
    assert "--text-column nowhere: applies to --texts only" in refused(capsys, monkeypatch, *argv)


# 6 ---------------------------------------------------------------------------------------------
def test_default_label_is_refused_with_combine_mean(setup, capsys, monkeypatch):
    merged, originals, texts = setup
    argv = _argv(merged, originals, "--texts", texts, "--windows", "--combine", "mean")
    line = refused(capsys, monkeypatch, *argv, "--default-label", "task0=benign")
    assert "--default-label task0=benign" in line and "--combine max" in line
    with pytest.raises(Hm3Error, match="apply to combine='max' only"):
        Windows(combine="mean", default_labels={"task0": "benign"})


# 7 ---------------------------------------------------------------------------------------------
def test_an_original_with_other_labels_is_refused(setup, capsys, monkeypatch):
    merged, originals, texts = setup
    wrong = {**originals, "task1": originals["task0"]}  # 2 labels for a 3-label task
    line = refused(capsys, monkeypatch, *_argv(merged, wrong, "--texts", texts))
    assert f"--originals task1={originals['task0']}" in line
    assert "must share its labels" in line


# 8 ---------------------------------------------------------------------------------------------
def test_the_reported_max_length_is_the_one_that_ran(setup, accepted):
    merged, _, _ = setup
    code, out, err = accepted
    assert code == 0, err
    result = json.loads(out)
    effective = hm3.load(merged, max_length=4096).max_length
    assert effective < 4096 and result["setup"]["max_length"] == effective
    assert result["setup"]["max_lengths"] == {}  # every run used the same


# 9 ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def float_export(setup, tmp_path_factory):
    """A real float32 export of the merged model, which bench opens before any run."""
    from hm3.export.api import export_onnx

    folder = tmp_path_factory.mktemp("bench-export") / "onnx"
    export_onnx(setup[0], folder, options=hm3.RunOptions(progress=False, max_length=32))
    return folder


def fake_export(export, folder, **block):
    """A copy of ``export`` whose config.json's onnx block says ``block`` too (int8, fused...);
    bench reads what it reports from there, and only a stand-in for the worker runs it."""
    shutil.copytree(export, folder)
    config = json.loads((folder / "config.json").read_text())
    config["onnx"].update(block)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def measured(spec, threads):
    """What a worker process reports, without one."""
    figures = dict.fromkeys(("load_s", "infer_s", "infer_cpu_s", "peak_mb"), 1.0)
    return {**figures, "threads": 1, "max_lengths": [32] * len(spec.models)}


def test_exports_are_named_after_their_directories(
    setup, float_export, capsys, monkeypatch, tmp_path
):  # fmt: skip
    """Every export keeps its directory's name (not NAME#1 after the first); two of the same
    name keep the parent folders that tell them apart."""
    from hm3.bench import api
    from hm3.bench.names import export_names
    from hm3.cli.bench import print_bench

    merged, originals, texts = setup
    dirs = [tmp_path / "onnx32", tmp_path / "onnx8", tmp_path / "a" / "onnx", tmp_path / "b/onnx"]
    monkeypatch.setattr(api, "spawn", measured)
    kinds = [
        {"quantized": "int8", "fused": {"QAttention": 2}},
        {"fused": {}},
        *[{"fused": None}] * 2,
    ]
    exports = [fake_export(float_export, d, **k) for d, k in zip(dirs, kinds, strict=True)]
    onnx = [arg for export in exports for arg in ("--onnx", export)]
    code, out, err = run(capsys, monkeypatch, *_argv(merged, originals, "--texts", texts),
                         "--json", *onnx)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    names = ["onnx32", "onnx8", "a/onnx", "b/onnx"]
    assert list(result["onnx"]) == names
    assert list(result["runs"]) == ["originals", "merged", *(f"onnx:{n}" for n in names)]
    print_bench(api.BenchResult.model_validate(result))
    table = capsys.readouterr().out.splitlines()
    rows = [line.split("│")[1].strip() for line in table if line.startswith("│")]
    graphs = ["int8, fused", *["float32, standard ONNX"] * 3]  # what each config.json says
    labels = [f"onnx {n} ({g})" for n, g in zip(names, graphs, strict=True)]
    assert rows == ["originals", "merged", *labels], table
    assert [result["onnx"][n]["precision"] for n in names] == ["int8", *["float32"] * 3]
    assert [result["onnx"][n]["fused"] for n in names] == [True, False, False, False]
    deeper = ["x/a/onnx", "y/a/onnx", "z/onnx8"]
    assert export_names([tmp_path / d for d in deeper]) == [*deeper[:2], "onnx8"]


def test_the_same_export_twice_is_refused(setup, float_export, capsys, monkeypatch, tmp_path):
    merged, originals, texts = setup
    export = fake_export(float_export, tmp_path / "onnx8")
    monkeypatch.chdir(tmp_path)
    argv = _argv(merged, originals, "--texts", texts, "--onnx", export, "--onnx", "onnx8/")
    line = refused(capsys, monkeypatch, *argv)
    assert line == f"error: --onnx onnx8: the same export as --onnx {export}; give each export once"
