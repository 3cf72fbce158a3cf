"""Head alignment (issue 4): exactness, improvement, folding, streaming, records, bad input.

Core properties run on every family: a merge of one model with itself moves its logits no
more than the ridge bound allows (λ‖W*‖², since the original head is a feasible point); after
alignment a real merge's logits are closer to every original's; the written head equals a
ridge fit computed here, independently, on features captured with a plain forward hook.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import shutil
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hm3.model.features
from hm3.alignment.api import align, collect
from hm3.alignment.fit import AUTO_RIDGES, RidgeStats
from hm3.alignment.result import AlignStats
from hm3.defaults import DEFAULT_RIDGE
from hm3.errors import Hm3Error
from hm3.io.texts import TextCount, iter_text_batches, open_texts
from hm3.model.architectures import SUPPORTED
from hm3.model.classifier import load
from tiny import FAMILIES, make_classifier, toy_texts

FIT = toy_texts(120, seed=1)
SEGMENTS = (slice(0, 2), slice(2, 5), slice(5, 9))  # the three toy tasks' logits
HELD_OUT = toy_texts(40, seed=2)


# -- helpers -----------------------------------------------------------------------------------
def write_texts(path, texts, column="text"):
    if path.suffix == ".jsonl":
        lines = (json.dumps({column: t, "id": i}) + "\n" for i, t in enumerate(texts))
        path.write_text("".join(lines))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", column])
            writer.writerows(enumerate(texts))
    else:
        pq.write_table(pa.table({column: list(texts)}), path, row_group_size=5000)
    return path


def merge_models(root, zoo, models, method="ties", **params):
    from hm3.merging.config import MergeConfig
    from hm3.merging.stream import merge

    data = {
        "base_model": str(zoo.base),
        "merge_method": method,
        "models": [{"model": str(m)} for m in models],
    }
    if params:
        data["parameters"] = params
    return merge(MergeConfig.from_dict(data), root, progress=False).path


def one_task_merged(src, dest, labels=("benign", "jailbreak"), source=None):
    """A one-task model in the merged format, built by hand (no merge method needed)."""
    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    task = {
        "name": "task",
        "labels": list(labels),
        "start": 0,
        "end": len(labels),
        "source": str(source or src),
    }
    config["hm3"] = {"version": 1, "merge": {}, "tasks": [task]}
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def projection_input(model_dir, texts):
    """X (the projection's input) and the logits, with transformers and a plain forward hook."""
    return _projection_input(str(model_dir), tuple(texts))


@functools.lru_cache(maxsize=256)
def _projection_input(model_dir, texts):
    model, tok = _load(model_dir)
    weight = SUPPORTED[model.config.model_type].projection_weight
    module = model.get_submodule(weight.removesuffix(".weight"))
    grabbed = []
    handle = module.register_forward_hook(lambda _m, args, _out: grabbed.append(args[0]))
    with torch.no_grad():
        logits = model(**tok(list(texts), padding=True, return_tensors="pt")).logits
    handle.remove()
    return grabbed[0].double().numpy(), logits.double().numpy()


@functools.lru_cache(maxsize=64)
def _load(model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def ridge_fit(x, y, ridge):
    """Reference: augmented least squares with an unpenalised ones column, λ = ridge·tr(XcᵀXc)/d."""
    xc = x - x.mean(axis=0)
    lam = ridge * np.trace(xc.T @ xc) / x.shape[1]
    xa = np.hstack([x, np.ones((len(x), 1))])
    penalty = lam * np.eye(x.shape[1] + 1)
    penalty[-1, -1] = 0
    return np.linalg.solve(xa.T @ xa + penalty, xa.T @ y), lam


def apply(b, x):
    return np.hstack([x, np.ones((len(x), 1))]) @ b


def assert_applies_fit(b, features_of, aligned, seg):
    """On the fitting and held-out texts, ``aligned``'s logits ``seg`` are the fit ``b`` applied
    to the features of the model ``features_of``."""
    for texts in (FIT, HELD_OUT):
        x, _ = projection_input(features_of, texts)
        _, got = projection_input(aligned, texts)
        expected = apply(b, x)
        tol = 1e-4 * max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(got[:, seg], expected, atol=tol)


def original_logits(zoo, texts):
    return np.hstack([projection_input(m, texts)[1] for m in zoo.models])


def projection_name(model_dir):
    return SUPPORTED[json.loads((model_dir / "config.json").read_text())["model_type"]].projection


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bert_words(zoo_of):
    return zoo_of("bert")


# -- one aligned merge per family, shared by the property tests ---------------------------------
@pytest.fixture(scope="module")
def aligned_merge(zoo_of, tmp_path_factory):
    cache = {}

    def get(family):
        if family not in cache:
            zoo = zoo_of(family)
            root = tmp_path_factory.mktemp(f"align-{family}")
            texts = write_texts(root / "fit.jsonl", FIT)
            merged = merge_models(root / "merged", zoo, zoo.models, "ties", density=0.5)
            result = align(merged, texts, root / "aligned", progress=False, device="cpu")
            cache[family] = (zoo, merged, result, texts)
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_self_merge_moves_logits_only_as_far_as_the_ridge_allows(zoo_of, tmp_path, family):
    zoo = zoo_of(family)
    original = zoo.models[2]
    merged = merge_models(tmp_path / "self", zoo, [original], "linear")
    texts = write_texts(tmp_path / "fit.jsonl", FIT)
    _, y = projection_input(original, FIT)
    w_star = load_file(str(original / "model.safetensors"))[projection_name(original)[0]].double()
    exact = align(merged, texts, tmp_path / "exact", ridge=1e-9, progress=False, device="cpu")
    _, tiny = projection_input(exact.path, FIT)
    np.testing.assert_allclose(tiny, y, atol=1e-4)
    default = align(merged, texts, tmp_path / "default", progress=False, device="cpu")
    _, shrunk = projection_input(default.path, FIT)
    sse = float(((shrunk - y) ** 2).sum())
    # ‖XB̂−Y‖² + λ‖Ŵ‖² ≤ λ‖W*‖², since W* is feasible (λ: the one task's, whatever the ridge)
    bound = default.tasks[0].lam * float((w_star**2).sum())
    assert sse <= bound * (1 + 1e-3) + 1e-7, (sse, bound)
    assert default.tasks[0].rmse_after == pytest.approx(np.sqrt(sse / y.size), rel=1e-2, abs=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_aligned_logits_are_closer_to_every_original(aligned_merge, family):
    zoo, merged, result, _ = aligned_merge(family)
    y = original_logits(zoo, FIT)
    _, before = projection_input(merged, FIT)
    _, after = projection_input(result.path, FIT)
    starts = [0, 2, 5, 9]
    for i, task in enumerate(result.tasks):
        seg = slice(starts[i], starts[i + 1])
        mse_before = float(((before[:, seg] - y[:, seg]) ** 2).mean())
        mse_after = float(((after[:, seg] - y[:, seg]) ** 2).mean())
        assert mse_after < 0.5 * mse_before, (task.name, mse_before, mse_after)
        assert task.rmse_before == pytest.approx(np.sqrt(mse_before), rel=1e-3)
        assert task.rmse_after == pytest.approx(np.sqrt(mse_after), rel=1e-2, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_folded_head_equals_fit_on_features_then_apply(aligned_merge, family):
    zoo, merged, result, _ = aligned_merge(family)
    x_fit, _ = projection_input(merged, FIT)
    y = original_logits(zoo, FIT)
    assert result.ridge == DEFAULT_RIDGE == "auto"  # each task at its own ridge
    for task, seg in zip(result.tasks, SEGMENTS, strict=True):
        b, lam = ridge_fit(x_fit, y[:, seg], ridge=task.ridge)
        assert task.lam == pytest.approx(lam, rel=1e-6)
        assert_applies_fit(b, merged, result.path, seg)


def test_varying_share_is_the_centred_over_the_uncentred_energy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) + 3.0  # varies about an offset of 3 per feature
    stats = RidgeStats(6, 1)
    for rows in (x[:7], x[7:]):  # the first batch's mean is the shift: the answer must not care
        stats.add(torch.from_numpy(rows), torch.zeros(len(rows), 1))
    xc = x - x.mean(axis=0)
    assert stats.varying_share() == pytest.approx(np.sum(xc**2) / np.sum(x**2), rel=1e-9)
    copies = RidgeStats(6, 1)
    copies.add(torch.from_numpy(np.tile(x[:1], (30, 1))), torch.zeros(30, 1))
    assert copies.varying_share() == 0.0 and RidgeStats(6, 1).varying_share() == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_projection_changes_and_transformers_loads_it(aligned_merge, family):
    _, merged, result, _ = aligned_merge(family)
    AutoModelForSequenceClassification.from_pretrained(result.path)
    before, after = (load_file(str(d / "model.safetensors")) for d in (merged, result.path))
    assert list(before) == list(after)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(projection_name(merged))
    for f in merged.iterdir():
        if f.name not in ("config.json", "README.md", "model.safetensors"):
            assert (result.path / f.name).read_bytes() == f.read_bytes(), f.name
    old, new = (json.loads((d / "config.json").read_text()) for d in (merged, result.path))
    assert new | {"hm3": None} == old | {"hm3": None}
    assert {k: v for k, v in new["hm3"].items() if k != "align"} == old["hm3"]


def test_metadata_and_model_card_record_the_alignment(aligned_merge, tmp_path):
    zoo, merged, result, texts = aligned_merge("bert")
    record = json.loads((result.path / "config.json").read_text())["hm3"]["align"]
    assert record["ridge"] == DEFAULT_RIDGE and record["lambda"] is None is result.lam
    assert [t["lambda"] for t in record["tasks"]] == pytest.approx([t.lam for t in result.tasks])
    assert record["n_texts"] == len(FIT) == result.n_texts
    digest = hashlib.sha256(texts.read_bytes()).hexdigest()
    assert record["texts_sha256"] == digest == result.texts_sha256
    assert [t["original"] for t in record["tasks"]] == [str(m.resolve()) for m in zoo.models]
    assert [t["name"] for t in record["tasks"]] == ["task0", "task1", "task2"]
    assert all(t["rmse_after"] < t["rmse_before"] for t in record["tasks"])
    card = (result.path / "README.md").read_text()
    assert card.startswith((merged / "README.md").read_text().rstrip())
    assert "## Head alignment" in card and "| `task1` |" in card
    assert f"{len(FIT)} unlabeled texts" in card
    again = align(
        result.path,
        texts,
        tmp_path / "again",
        ridge=0.5,
        max_texts=50,
        progress=False,
        device="cpu",
    )
    card = (again.path / "README.md").read_text()
    assert card.count("## Head alignment") == 1 and "ridge 0.5" in card
    record = json.loads((again.path / "config.json").read_text())["hm3"]["align"]
    assert (record["ridge"], record["n_texts"], record["max_texts"]) == (0.5, 50, 50)
    assert hm3_load_ok(again.path)


def hm3_load_ok(path):
    clf = load(path, device="cpu")
    names = [t.name for t in clf.tasks]
    return names == ["task0", "task1", "task2"] and clf.logits(["hi"]).shape == (1, 9)


def test_collect_solves_any_ridge_and_folds_in_memory(aligned_merge):
    _, merged, result, texts = aligned_merge("roberta")
    stats = collect(merged, texts, progress=False, device="cpu")
    assert isinstance(stats, AlignStats) and stats.n_texts == len(FIT)
    clf = load(merged, device="cpu")
    stats.fold(clf, stats.solve(DEFAULT_RIDGE))
    written = load(result.path, device="cpu")
    np.testing.assert_allclose(clf.logits(HELD_OUT), written.logits(HELD_OUT), atol=1e-5)
    errors = [sum(t.rmse_after for t in stats.residuals(stats.solve(r))) for r in (0.0, 0.1, 10.0)]
    assert errors[0] <= errors[1] <= errors[2]  # in sample, more ridge never fits better


def test_ordinary_classifier_aligns_to_another_with_the_same_labels(bert_words, tmp_path):
    texts = write_texts(tmp_path / "fit.csv", FIT)
    other = make_classifier(bert_words.base, tmp_path / "other", ["benign", "jailbreak"], seed=99)
    with pytest.raises(Hm3Error, match=r"records no original.*originals=\{'other': DIR\}"):
        align(other, texts, tmp_path / "out", progress=False)
    result = align(
        other,
        texts,
        tmp_path / "out",
        originals={"other": bert_words.models[0]},
        progress=False,
        device="cpu",
    )
    assert result.tasks[0].rmse_after < result.tasks[0].rmse_before
    hm3_block = json.loads((result.path / "config.json").read_text())["hm3"]
    assert hm3_block["tasks"][0]["source"] == str(bert_words.models[0].resolve())
    assert [t.name for t in load(result.path, device="cpu").tasks] == ["other"]


def test_sharded_weights_and_unknown_family(bert_words, tmp_path, monkeypatch):
    sharded = tmp_path / "sharded"
    AutoModelForSequenceClassification.from_pretrained(bert_words.models[1]).save_pretrained(
        sharded, max_shard_size="20KB"
    )
    for f in bert_words.models[1].glob("*.txt"):
        shutil.copy(f, sharded / f.name)
    texts = write_texts(tmp_path / "fit.parquet", FIT)
    original = make_classifier(bert_words.base, tmp_path / "orig", ["a", "b", "c"], seed=5)
    monkeypatch.delitem(SUPPORTED, "bert")  # found as the only Linear with one output per label
    result = align(
        sharded,
        texts,
        tmp_path / "out",
        originals={"sharded": original},
        progress=False,
        device="cpu",
    )
    monkeypatch.undo()
    assert (result.path / "model.safetensors.index.json").is_file()
    assert result.tasks[0].rmse_after < 0.5 * result.tasks[0].rmse_before
    _, logits = projection_input(result.path, FIT[:20])
    y = projection_input(original, FIT[:20])[1]
    assert np.sqrt(((logits - y) ** 2).mean()) < 0.5 * result.tasks[0].rmse_before


# -- streaming ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_large_text_file_is_streamed_in_bounded_memory(tmp_path, suffix):
    rows = 60_000
    texts = [f"row {i} " + "lorem ipsum dolor sit amet " * 4 for i in range(rows)]
    text_bytes = sum(len(t) for t in texts)  # ~7 MB of text; held whole, it would cost more
    path = write_texts(tmp_path / f"big{suffix}", texts)
    del texts
    count = TextCount()
    tracemalloc.start()
    largest = 0
    for batch in iter_text_batches(open_texts(path), 64, count=count):
        largest = max(largest, len(batch))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count.texts == rows and largest == 64
    # a few thousand rows' worth at most (parquet holds one 1,024-row record batch)
    assert peak < 0.05 * text_bytes, f"peak {peak / 2**20:.2f} MiB for {text_bytes / 2**20:.1f} MiB"
    count = TextCount()
    first = next(iter_text_batches(open_texts(path), 10, max_texts=25, count=count))
    assert first[0].startswith("row 0 ") and count.texts == 10


def test_align_reads_only_the_texts_it_needs(bert_words, tmp_path):
    path = write_texts(tmp_path / "big.jsonl", toy_texts(64, seed=5))
    with path.open("a") as f:  # row 65 would be an error if it were read at all
        f.write('{"text": 5}\n' + '{"text": "more"}\n' * 100_000)
    merged = one_task_merged(bert_words.models[0], tmp_path / "m")
    result = align(merged, path, tmp_path / "out", max_texts=64, progress=False, device="cpu")
    assert result.n_texts == 64
    with pytest.raises(Hm3Error, match=r"row 65 .* is not text"):
        align(merged, path, tmp_path / "out2", max_texts=65, progress=False, device="cpu")


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture
def case(bert_words, tmp_path):
    """A one-task merged model (task labels benign/jailbreak, source = models[0]) and texts."""
    merged = one_task_merged(bert_words.models[0], tmp_path / "merged")
    return merged, write_texts(tmp_path / "fit.jsonl", FIT[:20])


def _file(name, text):
    def make(tmp, _zoo):
        (tmp / name).write_text(text)
        return {"texts_file": tmp / name}

    return make


def _original(labels):
    def make(tmp, zoo):
        return {"originals": {"task": make_classifier(zoo.base, tmp / "orig", labels, seed=3)}}

    return make


BAD = {
    "missing file": (lambda t, z: {"texts_file": t / "nope.jsonl"}, "nope.jsonl': file not found"),
    "empty file": (_file("e.jsonl", ""), "has no rows"),
    "header-only csv": (_file("h.csv", "id,text\n"), "has no rows"),
    "blank texts": (
        _file("b.jsonl", '{"text": ""}\n{"text": " "}\n'),
        "no texts in column 'text' (2 blank rows)",
    ),
    "missing column": (
        _file("c.jsonl", '{"body": "hi", "id": 1}\n'),
        "no column 'text'; columns in the file: body, id; set text_column",
    ),
    "not text": (_file("n.jsonl", '{"text": 3}\n'), "row 1 of column 'text' is not text"),
    "bad json": (_file("j.jsonl", '{"text": "a"}\n{oops\n'), "line 2 is not valid JSON"),
    "lone surrogate": (
        _file("u.jsonl", '{"text": "a"}\n{"text": "b \\ud800"}\n'),
        "row 2 of column 'text' is not valid Unicode text (a lone surrogate at character 2",
    ),
    "wrong type": (_file("x.txt", "hello\n"), "'.txt' not supported"),
    "swapped labels": (
        _original(["jailbreak", "benign"]),
        "labels of task 'task' in another order (jailbreak, benign vs benign, jailbreak)",
    ),
    "other labels": (
        _original(["benign", "toxic"]),
        "label 1 is 'toxic' but task 'task' calls it 'jailbreak'",
    ),
    "label count": (
        lambda t, z: {"originals": {"task": z.models[1]}},
        "has 3 labels (LABEL_0, LABEL_1, LABEL_2) but task 'task' has 2",
    ),
    "original gone": (
        lambda t, z: {"merged_dir": one_task_merged(z.models[0], t / "m2", source=t / "deleted")},
        "its original",
    ),
    "original dir missing": (
        lambda t, z: {"originals": {"task": t / "nowhere"}},
        "originals={'task': ",
    ),
    "unknown task": (
        lambda t, z: {"originals": {"toxicity": z.models[0]}},
        "has no task 'toxicity'; its tasks are: task",
    ),
    "one text": (_file("o.jsonl", '{"text": "hello there"}\n'), "its 1 text(s) all give"),
    "copies of one text": (
        _file("s.jsonl", '{"text": "the same words"}\n' * 40),
        "its 40 text(s) all give the merged model the same features",
    ),
    "negative ridge": (lambda t, z: {"ridge": -0.1}, "ridge=-0.1: expected a finite number >= 0"),
    "unknown ridge": (lambda t, z: {"ridge": "best"}, "ridge='best': expected a finite number"),
    "no merged dir": (lambda t, z: {"merged_dir": t / "absent"}, "model directory not found"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_clear_error_and_no_output(bert_words, case, tmp_path, name):
    merged, texts = case
    make, message = BAD[name]
    kwargs = {
        "merged_dir": merged,
        "texts_file": texts,
        "out": tmp_path / "out",
        "progress": False,
        "device": "cpu",
    } | make(tmp_path, bert_words)
    with pytest.raises(Hm3Error) as err:
        align(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_fewer_texts_than_features_warns_and_still_aligns(case, tmp_path, caplog):
    merged, _ = case
    texts = write_texts(tmp_path / "few.jsonl", FIT[:8])  # the tiny BERT reads 32 features
    result = align(merged, texts, tmp_path / "out", progress=False, device="cpu")
    assert result.path.is_dir()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("8 texts for a head that reads 32 features" in m for m in warned), warned
    caplog.clear()
    align(merged, write_texts(tmp_path / "many.jsonl", FIT[:40]), tmp_path / "o2", progress=False)
    assert not [r for r in caplog.records if "texts for a head" in r.getMessage()]


def test_original_not_found_suggests_originals(bert_words, tmp_path):
    merged = one_task_merged(bert_words.models[0], tmp_path / "m", source=tmp_path / "gone")
    texts = write_texts(tmp_path / "t.jsonl", FIT[:5])
    with pytest.raises(
        Hm3Error,
        match=r"task 'task': its original .*gone .*cannot be found; pass "
        r"originals=\{'task': DIR\}",
    ):
        align(merged, texts, tmp_path / "out", progress=False)


def test_existing_output_needs_force(case, tmp_path):
    merged, texts = case
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(Hm3Error, match="already exists; choose another path or pass force=True"):
        align(merged, texts, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "keep").read_text() == "mine"
    align(merged, texts, tmp_path / "out", force=True, progress=False, device="cpu")
    assert not (tmp_path / "out" / "keep").exists()


def test_placeholder_labels_match_any_names(bert_words, tmp_path):
    merged = one_task_merged(bert_words.models[1], tmp_path / "m", ["safe", "unsafe", "unsure"])
    texts = write_texts(tmp_path / "t.jsonl", FIT[:40])
    align(merged, texts, tmp_path / "out", progress=False, device="cpu")  # LABEL_i vs given names


# -- CLI ---------------------------------------------------------------------------------------
def run(capsys, *argv):
    from hm3.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_cli_end_to_end(aligned_merge, tmp_path, capsys):
    zoo, merged, _, texts = aligned_merge("bert")
    code, _, err = run(
        capsys,
        "align",
        merged,
        "--texts",
        texts,
        "--out",
        tmp_path / "a",
        "--ridge",
        "0.2",
        "--max-texts",
        "80",
        "--batch-size",
        "16",
        "--originals",
        f"task1={zoo.models[1]}",
        "--no-progress",
    )
    assert code == 0, err
    assert "task1: logit RMSE" in err and "aligned 3 tasks on 80 texts" in err
    record = json.loads((tmp_path / "a" / "config.json").read_text())["hm3"]["align"]
    assert record["ridge"] == 0.2 and record["tasks"][1]["original"] == str(zoo.models[1].resolve())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ridge", "-1"], "--ridge -1: expected a finite number >= 0 or auto"),
        (["--ridge", "nan"], "--ridge nan: expected a finite number >= 0 or auto"),
        (["--ridge", "automatic"], "--ridge automatic: expected a finite number >= 0 or auto"),
        (["--text-column", "body"], "no column 'body'"),
        (["--originals", "task1"], "--originals task1: expected TASK=DIR"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(aligned_merge, tmp_path, capsys, args, message):
    from test_cli import expect_user_error

    _, merged, _, texts = aligned_merge("bert")
    names = texts if args[0] == "--text-column" else args[0]
    expect_user_error(capsys, tmp_path, "align", merged, "--texts", texts, "--out",
                      tmp_path / "out", "--no-progress", *args, match=message, names=names,
                      watch=(merged, texts))  # fmt: skip


def test_feature_capture_rejects_a_head_that_sees_tokens(bert_words, tmp_path, monkeypatch):
    merged = one_task_merged(bert_words.models[0], tmp_path / "m")
    texts = write_texts(tmp_path / "t.jsonl", FIT[:4])
    real = hm3.model.features.features

    def per_token(clf, module, batch, projection):
        def tokens(_m, args):
            return (args[0][:, None, :].expand(-1, 3, -1),)

        handle = module.register_forward_pre_hook(tokens)
        try:
            return real(clf, module, batch, projection)
        finally:
            handle.remove()

    monkeypatch.setattr("hm3.alignment.api.features", per_token)
    with pytest.raises(Hm3Error, match="did not see one vector per text"):
        align(merged, texts, tmp_path / "out", progress=False, device="cpu")


# -- ridge "auto": generalised cross-validation -----------------------------------------------
def _gcv_reference(x, y, ridge, intercept):
    """GCV from the explicit hat matrix: n·‖(I − H)y‖² / (n − tr H)², intercept unpenalised."""
    n, d = x.shape
    xc = x - x.mean(axis=0) if intercept else x
    lam = ridge * np.trace(xc.T @ xc) / d
    xa = np.hstack([x, np.ones((n, 1))]) if intercept else x
    penalty = lam * np.eye(xa.shape[1])
    if intercept:
        penalty[-1, -1] = 0
    hat = xa @ np.linalg.solve(xa.T @ xa + penalty, xa.T)
    resid = y - hat @ y
    return n * np.sum(resid**2) / (n - np.trace(hat)) ** 2


def _stats(x, y, batches=(0, 9, 30)):
    stats = RidgeStats(x.shape[1], y.shape[1])
    for start, end in zip(batches, [*batches[1:], len(x)], strict=True):
        stats.add(torch.from_numpy(x[start:end]), torch.from_numpy(y[start:end]))
    return stats


@pytest.mark.parametrize("intercept", [True, False])
def test_gcv_equals_the_hat_matrix_formula(intercept):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 8)) + 2.0
    y = x @ rng.normal(size=(8, 5)) + rng.normal(scale=0.7, size=(60, 5))
    groups = [(0, 2), (2, 5)]
    ridges = (0.01, 0.1, 1.0, 10.0)
    scores = _stats(x, y).gcv(groups, ridges, intercept=intercept)
    for i, (start, end) in enumerate(groups):
        for j, r in enumerate(ridges):
            expected = _gcv_reference(x, y[:, start:end], r, intercept)
            assert float(scores[i, j]) == pytest.approx(expected, rel=1e-8)


def test_solve_gcv_fits_each_group_at_its_lowest_score():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 10))
    w = rng.normal(size=(10, 4))
    clean, noisy = x @ w[:, :2], x @ w[:, 2:] + rng.normal(scale=5.0, size=(80, 2))
    stats = _stats(x, np.hstack([clean, noisy]))
    groups = [(0, 2), (2, 4)]
    solution = stats.solve_gcv(groups, AUTO_RIDGES)
    scores = stats.gcv(groups, AUTO_RIDGES)
    for i, (start, end) in enumerate(groups):
        chosen = AUTO_RIDGES[int(scores[i].argmin())]
        assert torch.all(solution.ridge[start:end] == chosen)
        fixed = stats.solve(chosen)
        for field in ("weight", "bias", "lam", "sse"):
            torch.testing.assert_close(
                getattr(solution, field)[start:end], getattr(fixed, field)[start:end]
            )
    # targets the features explain exactly want the least shrinkage; noise wants more
    assert float(solution.ridge[0]) == AUTO_RIDGES[0] < float(solution.ridge[2])
    with pytest.raises(ValueError, match=r"must cover outputs 0\.\.3 once"):
        stats.solve_gcv([(0, 2)], AUTO_RIDGES)


def test_solve_gcv_with_fewer_texts_than_features():
    rng = np.random.default_rng(6)
    stats = _stats(rng.normal(size=(5, 40)), rng.normal(size=(5, 2)), batches=(0,))
    scores = stats.gcv([(0, 2)], AUTO_RIDGES)
    assert torch.isfinite(scores).all()  # 5 texts, 40 features: any λ > 0 leaves freedom
    chosen = AUTO_RIDGES[int(scores.argmin())]
    torch.testing.assert_close(stats.solve_gcv([(0, 2)]).weight, stats.solve(chosen).weight)
    # a ridge too small to register in float64 leaves none: the fit interpolates the texts
    assert torch.isinf(stats.gcv([(0, 2)], (1e-30, 1e-29))).all()
    assert float(stats.solve_gcv([(0, 2)], (1e-30, 1e-29)).ridge[0]) == 1e-29  # the largest


def test_auto_ridge_end_to_end(aligned_merge, tmp_path, capsys):
    _, merged, _, texts = aligned_merge("bert")
    result = align(merged, texts, tmp_path / "auto", ridge="auto", progress=False, device="cpu")
    assert result.ridge == "auto" and result.lam is None
    assert all(t.ridge in AUTO_RIDGES and t.lam > 0 for t in result.tasks)
    record = json.loads((result.path / "config.json").read_text())["hm3"]["align"]
    assert record["ridge"] == "auto" and record["lambda"] is None
    assert record["ridge_grid"] == list(AUTO_RIDGES)
    assert [t["ridge"] for t in record["tasks"]] == [t.ridge for t in result.tasks]
    assert "generalised cross-validation" in (result.path / "README.md").read_text()
    # each task's rows are what a fixed-ridge alignment at its chosen ridge writes
    _, aligned = projection_input(result.path, HELD_OUT)
    for task, (start, end) in zip(result.tasks, [(0, 2), (2, 5), (5, 9)], strict=True):
        fixed = align(merged, texts, tmp_path / f"r{start}", ridge=task.ridge, progress=False)
        _, theirs = projection_input(fixed.path, HELD_OUT)
        np.testing.assert_allclose(aligned[:, start:end], theirs[:, start:end], atol=1e-4)
    cli = ["align", merged, "--texts", texts, "--ridge", "AUTO", "--out", tmp_path / "cli"]
    code, _, err = run(capsys, *cli, "--no-progress")
    assert code == 0 and "ridge auto: task0 " in " ".join(err.split()), err
