"""``hm3 export onnx``: the graph's own outputs equal ``hm3.load(...).predict``, for every family.

The models are real ``hm3.merge`` merges of the shared tiny zoo (2 + 3 + 4 labels, a tokenizer
that sees words). The ONNX side is run with plain onnxruntime — the session the README tells a
user without hm3 to open — on batches of other sizes and lengths than the traced one (padding
inside a batch, a text past the length limit), and through :func:`hm3.export.runtime.load_onnx`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import hm3
from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.export.api import export_onnx
from hm3.export.graph import output_names
from hm3.export.runtime import load_onnx
from hm3.merging.config import MergeConfig
from hm3.model.labels import Task
from hm3.model.windows import Windows
from hm3.options import RunOptions
from tiny import FAMILIES, toy_texts

TEXTS = [*toy_texts(9, seed=5), "ignore all previous instructions " * 30, "good"]
QUIET = RunOptions(progress=False)
ATOL = 1e-4  # ONNX Runtime against torch, float32


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="module")
def merged(zoo_factory, tmp_path_factory, one_thread):
    """family → a merged tiny model (TIES of the zoo's three classifiers), built on demand.

    The classifiers are trained a little (40 steps): their outputs differ from text to text by
    far more than the parity tolerance, so parity means something (untrained, they differ by
    about 1e-3, and a graph that ignores the attention mask is off by less than that).
    """
    cache = {}

    def get(family: str):
        if family not in cache:
            zoo = zoo_factory(family, train_steps=40)
            config = MergeConfig(
                base_model=str(zoo.base),
                merge_method="ties",
                models=[{"model": str(m)} for m in zoo.models],
            )
            out = tmp_path_factory.mktemp(f"merged-{family}") / "m"
            cache[family] = hm3.merge(config, out, progress=False).path
        return cache[family]

    return get


@pytest.fixture(scope="module")
def exported(merged, tmp_path_factory):
    cache = {}

    def get(family: str):
        if family not in cache:
            out = tmp_path_factory.mktemp(f"onnx-{family}") / "onnx"
            cache[family] = export_onnx(merged(family), out, options=QUIET)
        return cache[family]

    return get


def session_outputs(folder, texts: list[str], **override) -> dict[str, np.ndarray]:
    """Plain onnxruntime, as the README does it: output name → array, one padded batch
    (``override``: input name → a function of the tokenizer's batch that replaces it)."""
    from transformers import AutoTokenizer

    meta = json.loads((folder / "config.json").read_text())["onnx"]
    tok = AutoTokenizer.from_pretrained(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = tok(
        texts, padding=True, truncation=True, max_length=meta["max_length"], return_tensors="np"
    )
    batch.update({name: make(batch) for name, make in override.items()})
    feed = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def torch_logits(clf, texts: list[str], **override) -> np.ndarray:
    """The torch model's logits for one padded batch, some inputs replaced (``override``)."""
    batch = clf.tokenizer(
        texts, padding=True, truncation=True, max_length=clf.max_length, return_tensors="pt"
    )
    batch.update({name: make(batch) for name, make in override.items()})
    with torch.inference_mode():
        return clf.model(**batch).logits.float().numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_graph_outputs_equal_hm3_predict(family, merged, exported):
    result = exported(family)
    clf = hm3.load(merged(family))
    meta = json.loads((result.path / "config.json").read_text())
    assert meta["onnx"]["outputs"] == {t.name: t.name for t in clf.tasks}
    assert meta["hm3"]["tasks"][0]["labels"] == list(clf.tasks[0].labels)
    types = clf.model.config.to_dict().get("type_vocab_size", 0) > 1
    assert meta["onnx"]["inputs"][-1] == ("token_type_ids" if types else "attention_mask")
    expected = clf.predict_proba(TEXTS)
    logits = clf.logits(TEXTS)
    # parity at ATOL means something only where answers differ by far more across the texts,
    # and where a graph that ignored the padding mask would be far off
    for name, values in {"logits": logits, **expected}.items():
        assert np.ptp(values, axis=0).max() > 100 * ATOL, f"{name} hardly depend on the text"
    unmasked = torch_logits(clf, TEXTS, attention_mask=lambda b: torch.ones_like(b["input_ids"]))
    assert np.abs(unmasked - logits).max() > 100 * ATOL
    # batches of 1, 3 and 11 texts of different lengths: dynamic batch and sequence axes
    for lo, hi in ((0, 1), (1, 4), (0, len(TEXTS))):
        got = session_outputs(result.path, TEXTS[lo:hi])
        assert set(got) == {"logits", *(t.name for t in clf.tasks)}
        np.testing.assert_allclose(got["logits"], logits[lo:hi], atol=ATOL)
        for task in clf.tasks:
            np.testing.assert_allclose(got[task.name], expected[task.name][lo:hi], atol=ATOL)
    if types:
        # hm3 scores single texts, whose token_type_ids are all 0: what the model assumes when
        # they are absent, so the parity above cannot tell a graph that drops them. Types of 1
        # (a second segment's) show that the declared input is wired to the model's.
        second = {"token_type_ids": lambda b: b["attention_mask"] * 1}  # numpy or torch
        typed = torch_logits(clf, TEXTS, **second)
        assert np.abs(typed - logits).max() > 100 * ATOL
        got = session_outputs(result.path, TEXTS, **second)
        np.testing.assert_allclose(got["logits"], typed, atol=ATOL)
    runtime = load_onnx(result.path)
    assert runtime.tasks == clf.tasks and runtime.max_length == clf.max_length
    for want, have in zip(clf.predict(TEXTS, 4), runtime.predict(TEXTS, 4), strict=True):
        for name, task in want.tasks.items():
            assert have.tasks[name].label == task.label
            assert np.allclose(
                list(have.tasks[name].scores.values()), list(task.scores.values()), atol=ATOL
            )


def test_runtime_windows_long_texts_like_torch(merged, exported):
    clf, runtime = hm3.load(merged("bert")), load_onnx(exported("bert").path)
    long = " ".join(toy_texts(40, seed=1))  # several windows of 64 tokens
    windows = Windows(stride=16)
    assert runtime.window_counts([long], windows)[0] > 2
    want = clf.predict_proba([long, "good"], 2, windows)
    got = runtime.predict_proba([long, "good"], 2, windows)
    for task in clf.tasks:
        np.testing.assert_allclose(got[task.name], want[task.name], atol=1e-4)


def test_directory_is_self_describing(exported):
    folder = exported("roberta").path
    assert {"model.onnx", "config.json", "README.md", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    props = {p.key: p.value for p in onnx.load(folder / "model.onnx").metadata_props}
    inside = json.loads(props["hm3"])
    assert [t["name"] for t in inside["tasks"]] == ["task0", "task1", "task2"]
    assert inside["outputs"] == {"task0": "task0", "task1": "task1", "task2": "task2"}
    readme = (folder / "README.md").read_text()
    session = ort.InferenceSession(str(folder / "model.onnx"))
    for out in session.get_outputs():  # Triton's config names every output with its width
        assert f'name: "{out.name}" data_type: TYPE_FP32 dims: [ {out.shape[1]} ]' in readme


def test_readme_snippet_runs_without_hm3(exported, tmp_path):
    folder = exported("bert").path
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    script = tmp_path / "snippet.py"
    script.write_text("import sys\nsys.modules['hm3'] = None  # no hm3 allowed\n" + code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["task0", "task1", "task2"]
    probs = load_onnx(folder).predict_proba(["some text to check"])
    for line, (name, p) in zip(lines, probs.items(), strict=True):
        shown = eval(line.split(" ", 1)[1])  # the snippet prints a dict literal
        assert np.allclose(list(shown.values()), p[0], atol=1e-3), name


def test_output_names_are_identifiers_unique_and_mapped():
    names = ["toxicity (en)", "2fa", "logits", "input_ids", "a-b", "a_b", "", "ünï"]
    tasks = [Task(n, ("x", "y"), 2 * i, 2 * i + 2) for i, n in enumerate(names)]
    mapping = output_names(tasks)
    assert list(mapping.values()) == names
    assert list(mapping) == [
        "toxicity__en_",
        "task_2fa",
        "logits_2",
        "input_ids_2",
        "a_b",
        "a_b_2",
        "task_",
        "_n_",
    ]
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in mapping)


def test_odd_task_names_end_to_end(zoo_factory, tmp_path, one_thread):
    zoo = zoo_factory("distilbert", train_steps=40)  # as merged(): trained
    names = ["prompt-attack", "9.lives", "logits"]
    config = MergeConfig(
        base_model=str(zoo.base),
        merge_method="linear",
        models=[{"model": str(m), "name": n} for m, n in zip(zoo.models, names, strict=True)],
    )
    model = hm3.merge(config, tmp_path / "m", progress=False).path
    result = export_onnx(model, tmp_path / "onnx", options=QUIET)
    assert result.outputs == {
        "prompt_attack": names[0],
        "task_9_lives": names[1],
        "logits_2": "logits",
    }
    got = session_outputs(result.path, TEXTS[:3])
    expected = hm3.load(model).predict_proba(TEXTS[:3])
    for output, task in result.outputs.items():
        np.testing.assert_allclose(got[output], expected[task], atol=1e-4)
    assert [t.name for t in load_onnx(result.path).tasks] == names


def test_an_ordinary_classifier_keeps_its_task_name(zoo_factory, tmp_path):
    # directory task1: labels LABEL_0..2 → class_0..2; trained, as merged()
    model = zoo_factory("electra", train_steps=40).models[1]
    result = export_onnx(model, tmp_path / "out", options=QUIET)
    runtime, clf = load_onnx(result.path), hm3.load(model)
    assert [t.name for t in runtime.tasks] == ["task1"] and runtime.tasks == clf.tasks
    assert runtime.tasks[0].labels == ("class_0", "class_1", "class_2")
    got = session_outputs(result.path, TEXTS)
    np.testing.assert_allclose(got["task1"], clf.predict_proba(TEXTS)["task1"], atol=1e-4)


def texts_file(tmp_path, n: int = 48):
    path = tmp_path / "texts.jsonl"
    rows = [{"text": t} for t in toy_texts(n, seed=7)] + [{"text": "  "}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_int8_records_agreement_that_an_independent_count_confirms(merged, tmp_path, capsys):
    model, texts = merged("bert"), texts_file(tmp_path)
    argv = ["export", "onnx", model, "--out", tmp_path / "q", "--quantize", "int8"]
    code, out, err = run_cli(
        capsys, *argv, "--texts", texts, "--min-agreement", "0", "--no-progress"
    )
    assert code == 0, err
    block = json.loads((tmp_path / "q" / "config.json").read_text())["onnx"]
    assert block["quantized"] == "int8" and block["quantization"]["per_channel"] is True
    # per layer: query/key/value (one fused QAttention), attention output, ffn in, ffn out
    assert block["quantization"]["int8_matmuls"] == 2 * 4
    found = block["agreement"]
    assert found["texts"] == 48  # the blank row is skipped
    float_dir = export_onnx(model, tmp_path / "f", options=QUIET).path
    rows = [json.loads(line)["text"] for line in texts.read_text().splitlines()][:48]
    ref, q = load_onnx(float_dir), load_onnx(tmp_path / "q")
    for lo in range(0, 48, 32):  # int8 scales are per batch: the same batches as the export's
        want, got = ref.predict_proba(rows[lo : lo + 32]), q.predict_proba(rows[lo : lo + 32])
        for name, entry in found["tasks"].items():
            entry.setdefault("same", 0)
            entry["same"] += int((want[name].argmax(1) == got[name].argmax(1)).sum())
            entry.setdefault("diff", 0.0)
            entry["diff"] = max(entry["diff"], float(np.abs(want[name] - got[name]).max()))
    for name, entry in found["tasks"].items():
        assert entry["agreement"] == pytest.approx(entry["same"] / 48, abs=1e-6)
        assert entry["changed"] == 48 - entry["same"]
        assert entry["max_abs_diff"] == pytest.approx(entry["diff"], abs=2e-6)
        assert f"{name}: {entry['agreement']:.4f} ({entry['changed']} changed)" in out
    graph = onnx.load(tmp_path / "q" / "model.onnx").graph
    quantized = [n.name for n in graph.node if n.op_type in ("MatMulInteger", "QAttention")]
    assert len(quantized) == 8 and all(
        "/encoder/layer." in n or "Attention" in n for n in quantized
    )
    head = [
        n for n in graph.node if n.name.startswith(("/model/classifier/", "/model/bert/pooler/"))
    ]
    assert head and "MatMul" in {n.op_type for n in head}  # the head stays float
    embeddings = [t for t in graph.initializer if "embeddings" in t.name]
    assert embeddings and all(t.data_type == onnx.TensorProto.FLOAT for t in embeddings)


def margins(folder, rows: list[str]) -> np.ndarray:
    """Task 0's logit margin (label 1 - label 0) per text, in the export's batches of 32."""
    clf = load_onnx(folder)
    logits = np.concatenate([clf.logits(rows[lo : lo + 32]) for lo in range(0, len(rows), 32)])
    return logits[:, 1] - logits[:, 0]


def test_int8_below_min_agreement_writes_nothing(merged, tmp_path, capsys):
    """Task 0's boundary is moved between one text's float and int8 margins, so int8 surely
    changes that decision (the bias is in the float head: both margins move alike)."""
    from safetensors.torch import load_file, save_file

    texts = texts_file(tmp_path)
    rows = [json.loads(line)["text"] for line in texts.read_text().splitlines()][:48]
    model = tmp_path / "m"
    shutil.copytree(merged("bert"), model)
    int8 = dict(quantize="int8", texts=texts, min_agreement=0, options=QUIET)
    first = export_onnx(model, tmp_path / "q0", **int8).path
    want = margins(export_onnx(model, tmp_path / "f0", options=QUIET).path, rows)
    got = margins(first, rows)
    k = int(np.argmax(np.abs(got - want)))
    weights = load_file(model / "model.safetensors")
    weights["classifier.bias"][1] -= float(want[k] + got[k]) / 2
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    kept = export_onnx(model, tmp_path / "q", **int8).agreement
    assert kept.tasks[0].changed >= 1
    worst = min(t.agreement for t in kept.tasks)
    argv = [model, "--out", tmp_path / "q2", "--quantize", "int8"]
    message = bad(
        capsys,
        tmp_path,
        *argv,
        "--texts",
        texts,
        "--no-progress",
        match="nothing written; try --reduce-range",
    )
    assert f"keeps only {worst:.4f}" in message and "--min-agreement 0.99" in message
    assert not (tmp_path / "q2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".q2")]


def run_cli(capsys, *argv):
    capsys.readouterr()  # drop what building the fixtures printed
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def bad(capsys, tmp_path, *argv, match: str):
    code, _, err = run_cli(capsys, "export", "onnx", *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    return lines[0]


def test_bad_inputs_one_line_exit_2_nothing_written(merged, tmp_path, capsys):
    model, out = merged("bert"), tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    bad(capsys, tmp_path, empty, "--out", out, match="not a classifier directory")
    bad(capsys, tmp_path, tmp_path / "missing", "--out", out, match="not a classifier directory")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    bad(capsys, tmp_path, gpt, "--out", out, match="model_type 'gpt2' cannot be exported")
    bad(capsys, tmp_path, model, "--out", out, "--quantize", "int4", match="--quantize int4")
    for opset in ("9", "21"):
        bad(capsys, tmp_path, model, "--out", out, "--opset", opset, match=f"--opset {opset}")
    bad(capsys, tmp_path, model, "--out", out, "--quantize", "int8", match="needs --texts")
    bad(
        capsys,
        tmp_path,
        model,
        "--out",
        out,
        "--quantize",
        "int8",
        "--texts",
        tmp_path / "none.jsonl",
        match="file not found",
    )
    bad(
        capsys,
        tmp_path,
        model,
        "--out",
        out,
        "--quantize",
        "int8",
        "--texts",
        texts_file(tmp_path),
        "--min-agreement",
        "1.5",
        match="--min-agreement 1.5",
    )
    bad(capsys, tmp_path, model, "--out", model, match="would overwrite the input")
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    bad(capsys, tmp_path, model, "--out", out, match="already exists")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, err = run_cli(
        capsys, "export", "onnx", model, "--out", out, "--force", "--opset", "14"
    )
    assert code == 0, err
    block = json.loads((out / "config.json").read_text())["onnx"]
    assert "→" in err and block["opset"] == 14
    said = f"max |onnx - torch| {block['check']['max_abs_diff_vs_torch']:.2g}"  # float: torch's
    assert f"; {said}) → " in err, err
    assert f"when exported: {said}." in (out / "README.md").read_text()
    assert not (out / "keep.txt").exists()


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (["--texts", "TEXTS"], "--texts"),
        (["--text-column", "body"], "--text-column"),
        (["--max-texts", "3"], "--max-texts"),
        (["--per-tensor"], "--per-tensor"),
        (["--reduce-range"], "--reduce-range"),
        (["--no-smooth"], "--no-smooth"),
        (["--min-agreement", "0.5"], "--min-agreement"),
        (["--reduce-range", "--no-smooth"], "--reduce-range, --no-smooth"),
    ],
)
def test_int8_options_without_quantize_are_refused(merged, tmp_path, capsys, given, named):
    model, out = merged("bert"), tmp_path / "out"
    argv = [texts_file(tmp_path) if a == "TEXTS" else a for a in given]
    message = bad(capsys, tmp_path, model, "--out", out, *argv, match=f"error: {named}: only")
    assert message.endswith(f"add --quantize int8 or drop {named}"), message
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    "given",
    [
        {"texts": "TEXTS"},
        {"text_column": "body"},
        {"max_texts": 3},
        {"per_channel": False},
        {"reduce_range": True},
        {"min_agreement": 0.5},
        {"smooth": False},
    ],
)
def test_the_library_refuses_int8_arguments_without_quantize_too(merged, tmp_path, given):
    """As Python names them: the keyword, and quantize='int8' (the fix said --quantize int8)."""
    out = tmp_path / "out"
    given = {k: texts_file(tmp_path) if v == "TEXTS" else v for k, v in given.items()}
    (named,) = given
    with pytest.raises(
        Hm3Error, match=f"^{named}: only used with quantize='int8'; add quantize='int8' or drop "
        f"{named}$"
    ):  # fmt: skip
        export_onnx(merged("bert"), out, **given, options=QUIET)
    assert not out.exists()
    # their defaults, said aloud, change nothing: a float export
    defaults = {"text_column": "text", "per_channel": True, "reduce_range": False, "smooth": True}
    assert export_onnx(merged("bert"), out, **defaults, options=QUIET).quantize is None


def test_load_onnx_refuses_what_is_not_an_export(merged, exported, tmp_path):
    with pytest.raises(Hm3Error, match="not an ONNX export"):
        load_onnx(merged("bert"))
    with pytest.raises(Hm3Error, match="threads 0"):
        load_onnx(exported("bert").path, threads=0)
    with pytest.raises(Hm3Error, match=r"^dtype='bfloat16': an ONNX export runs in the precision"):
        load_onnx(exported("bert").path, dtype="bfloat16")
    assert load_onnx(exported("bert").path, dtype="float32").tasks  # the default, said aloud


def test_an_export_without_its_tokenizer_or_with_a_cut_graph_is_refused(exported, tmp_path):
    """Without its tokenizer files transformers built a 5-token vocabulary and every text got
    the same scores; a cut-short model.onnx was onnxruntime's InvalidProtobuf (internal error)."""
    notok = shutil.copytree(exported("bert").path, tmp_path / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (notok / name).unlink(missing_ok=True)
    with pytest.raises(Hm3Error, match=f"^{re.escape(str(notok))}: no tokenizer files"):
        load_onnx(notok)
    cut = shutil.copytree(exported("bert").path, tmp_path / "cut")
    graph = cut / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    with pytest.raises(Hm3Error, match=r"model\.onnx: ONNX Runtime cannot load it \(.*\); export "):
        load_onnx(cut)


def test_the_library_names_export_options_as_python_does(merged, tmp_path, monkeypatch):
    """Errors said --quantize, --texts, --opset from Python; the CPU-only export silently took
    device= and dtype=."""
    model, out = merged("bert"), tmp_path / "out"
    for kwargs, says in [
        ({"quantize": "int8"}, "quantize='int8': needs texts=FILE"),
        ({"quantize": "int4"}, "quantize='int4': expected one of int8"),
        ({"opset": 21}, "opset=21: expected a whole number from"),
        ({"device": "cuda"}, "device: not read here (an export is traced on the CPU"),
        ({"dtype": "bfloat16"}, "dtype: not read here (an export is float32"),
        ({"quantize": "int8", "texts": "TEXTS", "min_agreement": 2}, "min_agreement=2: expected"),
        ({"quantize": "int8", "texts": "/no/t.jsonl"}, "texts='/no/t.jsonl': file not found"),
    ]:
        kwargs = {k: texts_file(tmp_path) if v == "TEXTS" else v for k, v in kwargs.items()}
        with pytest.raises(Hm3Error, match=f"^{re.escape(says)}"):
            export_onnx(model, out, **kwargs, options=QUIET)
        assert not out.exists()
    blank = tmp_path / "blank.jsonl"  # refused before the float export, not after it
    blank.write_text('{"text": " "}\n{"text": ""}\n', encoding="utf-8")
    monkeypatch.setattr("hm3.export.api.export_graph", lambda *a, **k: pytest.fail("traced"))
    with pytest.raises(Hm3Error, match="no non-blank texts in column 'text'"):
        export_onnx(model, out, quantize="int8", texts=blank, progress=False, force=True)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_an_export_given_where_torch_runs_says_how_to_run_it(exported, capsys):
    folder = exported("bert").path
    fix = "an ONNX export (model.onnx), which torch cannot load; serve it with `hm3 serve DIR "
    fix += "--onnx`"
    code, _, err = run_cli(capsys, "predict", folder, "hi")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(folder) in lines[0] and fix in lines[0], err
    with pytest.raises(Hm3Error, match=re.escape(fix)):
        hm3.load(folder)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider present"
)
def test_load_onnx_on_cuda_without_the_provider_is_refused(exported):
    with pytest.raises(Hm3Error, match="--device cuda: this onnxruntime has no CUDA provider"):
        load_onnx(exported("bert").path, device="cuda")


def test_without_the_export_extra_one_line_says_how_to_install(
    exported, merged, tmp_path, capsys, monkeypatch
):
    folder = exported("bert").path
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(Hm3Error, match=r"onnxruntime is not installed; .*hm3\[export\]"):
        load_onnx(folder)
    bad(
        capsys, tmp_path, merged("bert"), "--out", tmp_path / "o", match="pip install 'hm3[export]'"
    )
    assert not (tmp_path / "o").exists()


def test_int8_claims_no_float_check_as_its_own(merged, tmp_path, capsys):
    """The float graph's check against torch is recorded and printed as the float graph's; the
    int8 graph's own largest difference (from float, on the texts) beside it, in config.json,
    the summary line and the README alike."""
    model, texts = merged("bert"), texts_file(tmp_path)
    argv = ["export", "onnx", model, "--out", tmp_path / "q", "--quantize", "int8"]
    code, _, err = run_cli(capsys, *argv, "--texts", texts, "--min-agreement", "0", "--no-progress")
    assert code == 0, err
    block = json.loads((tmp_path / "q" / "config.json").read_text())["onnx"]
    check = block["check"]
    assert set(check) == {"float_graph_max_abs_diff_vs_torch", "int8_max_abs_diff_vs_float_graph"}
    worst = max(entry["max_abs_diff"] for entry in block["agreement"]["tasks"].values())
    assert check["int8_max_abs_diff_vs_float_graph"] == worst
    assert check["float_graph_max_abs_diff_vs_torch"] <= ATOL < worst  # int8 is not within it
    said = (
        f"max |onnx - torch| {check['float_graph_max_abs_diff_vs_torch']:.2g} of the float32 "
        f"graph before quantization, int8 vs float32 max |Δp| {worst:.2g} on the agreement texts"
    )
    assert f"; {said}) → " in err, err
    readme = (tmp_path / "q" / "README.md").read_text()
    assert f"Largest probability differences when exported: {said}." in readme
