"""``hm3.evaluate`` and ``hm3 evaluate`` on tiny real classifiers (no mocks of hm3's own code).

Every metric is recomputed independently: predictions from ``Classifier.predict`` (its own
batching), scikit-learn on the concatenated expectations. Plus a hand-worked pooled macro-F1,
cross-check datasets, per-row labels, one forward pass per distinct text, bad input, the CLI.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score

from conftest import Zoo
from hm3.cli.app import main
from hm3.cli.common import parse_named_paths
from hm3.errors import Hm3Error
from hm3.evaluation.results import EvaluationResult
from hm3.evaluation.run import evaluate
from hm3.evaluation.scoring import ORIGINAL, score_task
from hm3.evaluation.suite import Dataset, load_datasets, load_suite
from hm3.merging.config import MergeConfig
from hm3.merging.stream import merge
from hm3.model.classifier import load
from test_cli import expect_user_error
from test_suite import write_rows, write_suite
from tiny import WORDS, write_merge_yaml

N = 24  # rows per dataset


def group_texts(group: int, n: int, seed: int) -> list[str]:
    """Texts mostly from one word group of tiny's toy task (the trained label), mixed with words
    of the next group so that predictions vary from row to row."""
    rng = random.Random(seed)
    own, other = WORDS[group * 8 : group * 8 + 8], WORDS[(group + 1) % 4 * 8 :][:8]
    texts = []
    for _ in range(n):
        words = rng.choices(own, k=rng.randint(1, 8)) + rng.choices(other, k=rng.randint(0, 6))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts


def build_suite(root: Path) -> Path:
    """Datasets in all three formats; g2 cross-checks task0 on task1's data; mixed has per-row
    labels and repeats g0's texts (predicted once)."""
    g = [group_texts(i, N, seed=i) for i in range(4)]
    write_rows(root / "data" / "g0.jsonl", [{"text": t} for t in g[0]])
    write_rows(root / "data" / "g1.csv", [{"prompt": t, "id": i} for i, t in enumerate(g[1])])
    write_rows(root / "data" / "g2.parquet", [{"text": t} for t in g[2]])
    mixed = [{"text": t, "letter": "wxyz"[i % 4]} for i, t in enumerate(g[3][:8] + g[0][:8])]
    write_rows(root / "data" / "mixed.jsonl", mixed)
    return write_suite(
        root / "suite.yaml",
        {
            "datasets": [
                {
                    "name": "g0",
                    "path": "data/g0.jsonl",
                    "expect": {"task0": "benign", "task1": "class_0", "task2": "w"},
                },
                {
                    "name": "g1",
                    "path": "data/g1.csv",
                    "text": "prompt",
                    "expect": {"task0": "jailbreak", "task2": "x"},
                },
                {
                    "name": "g2",
                    "path": "data/g2.parquet",
                    "expect": {"task1": "class_2", "task0": "benign"},
                },
                {
                    "name": "mixed",
                    "path": "data/mixed.jsonl",
                    "expect": {"task2": {"column": "letter"}},
                },
            ]
        },
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one torch thread is faster, and far faster on a busy 2-core CI runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo(zoo_factory, _one_thread) -> Zoo:
    """conftest's zoo, trained for a few steps on tiny's toy task."""
    return zoo_factory("bert", train_steps=40)


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    return build_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="module")
def result(zoo, suite_file) -> EvaluationResult:
    originals = {f"task{i}": path for i, path in enumerate(zoo.models)}
    return evaluate(
        load_suite(suite_file),
        {"single0": zoo.models[0], "single2": zoo.models[2]},
        originals=originals,
        batch_size=5,
        progress=False,
    )


def independent_predictions(model_dir: Path, datasets: list[Dataset]) -> dict[str, np.ndarray]:
    """Dataset → predicted labels of the classifier's only task, via Classifier.predict."""
    clf = load(model_dir)
    (task,) = clf.tasks
    return {
        d.name: np.array([p.tasks[task.name].label for p in clf.predict(d.texts, batch_size=7)])
        for d in datasets
    }


def test_metrics_match_sklearn_on_concatenated_expectations(zoo, suite_file, result):
    datasets = load_datasets(load_suite(suite_file))
    expect_tasks = {
        "task0": ["g0", "g1", "g2"],
        "task1": ["g0", "g2"],
        "task2": ["g0", "g1", "mixed"],
    }
    cases = [("original", 0), ("original", 1), ("original", 2), ("single0", 0), ("single2", 2)]
    for model, i in cases:
        task, path = f"task{i}", zoo.models[i]
        score = result.model(model).task(task)
        used = [d for d in datasets if d.name in expect_tasks[task]]
        preds = independent_predictions(path, used)
        y_true = np.concatenate([d.expected[task] for d in used])
        y_pred = np.concatenate([preds[d.name] for d in used])
        assert [a.dataset for a in score.datasets] == expect_tasks[task]
        assert score.support == len(y_true)
        assert score.f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
        labels = list(result.model(model).task(task).labels)
        assert np.array_equal(score.confusion, confusion_matrix(y_true, y_pred, labels=labels))
        for acc, data in zip(score.datasets, used, strict=True):
            right = preds[data.name] == np.array(data.expected[task])
            assert acc.accuracy == pytest.approx(np.mean(right)) and acc.support == len(right)
    assert result.model("original").average_f1 == pytest.approx(
        np.mean([t.f1 for t in result.model("original").tasks])
    )
    assert result.model("single0").average_f1 == result.model("single0").task("task0").f1
    assert [m.name for m in result.models] == ["original", "single0", "single2"]
    assert [t.name for t in result.tasks] == ["task0", "task1", "task2"]


def test_pooled_macro_f1_by_hand():
    """3 rows expect benign (predicted b, b, j), 1 row expects jailbreak (predicted j).

    Pooled: benign P=2/2 R=2/3 F1=0.8; jailbreak P=1/2 R=1 F1=2/3 → macro 0.7333.
    The benign set alone: labels {benign, jailbreak} occur, jailbreak F1=0 → macro 0.4.
    """
    labels = ("benign", "jailbreak")
    a = Dataset(
        "a", Path("a"), ("1", "2", "3"), {"t": ("benign",) * 3}, {"t": "benign"}, {}, (0, 1, 2), 3
    )
    b = Dataset("b", Path("b"), ("4",), {"t": ("jailbreak",)}, {"t": "jailbreak"}, {}, (0,), 1)
    preds = {
        ("m", "t", "a"): np.array(["benign", "benign", "jailbreak"], dtype=object),
        ("m", "t", "b"): np.array(["jailbreak"], dtype=object),
    }
    score = score_task("m", "t", labels, [a, b], preds)
    assert score.f1 == pytest.approx((0.8 + 2 / 3) / 2)
    accuracy = [(d.dataset, d.accuracy, d.support) for d in score.datasets]
    assert accuracy == [("a", pytest.approx(2 / 3), 3), ("b", 1.0, 1)]
    assert score.confusion == ((2, 1), (0, 1))
    assert score_task("m", "t", labels, [a], preds).f1 == pytest.approx(0.4)


def test_agreement_with_the_original_by_hand():
    """5 rows of a 3-label task, expected a a b | c c; original a b a | c c; model a c b | a c.

    They differ on rows 2-4: on row 2 neither is right, on row 3 the model, on row 4 the
    original. The originals themselves, and a model scored without them, get no agreement.
    """
    labels = ("a", "b", "c")
    d1 = Dataset("d1", Path("d1"), tuple("123"), {"t": tuple("aab")}, {"t": "y"}, {}, (0, 1, 2), 3)
    d2 = Dataset("d2", Path("d2"), tuple("45"), {"t": tuple("cc")}, {"t": "c"}, {}, (0, 1), 2)

    def said(letters: str) -> np.ndarray:
        return np.array(list(letters), dtype=object)

    preds = {
        (ORIGINAL, "t", "d1"): said("aba"),
        (ORIGINAL, "t", "d2"): said("cc"),
        ("m", "t", "d1"): said("acb"),
        ("m", "t", "d2"): said("ac"),
    }
    got = score_task("m", "t", labels, [d1, d2], preds).agreement
    assert (got.rate, got.differ, got.model_right, got.original_right) == (0.4, 3, 1, 1)
    assert score_task(ORIGINAL, "t", labels, [d1, d2], preds).agreement is None
    alone = {k: v for k, v in preds.items() if k[0] == "m"}
    assert score_task("m", "t", labels, [d1, d2], alone).agreement is None


def test_a_model_agrees_fully_with_itself_as_original(result):
    for model, task in [("single0", "task0"), ("single2", "task2")]:
        got = result.model(model).task(task).agreement
        assert (got.rate, got.differ, got.model_right, got.original_right) == (1.0, 0, 0, 0)
    assert all(t.agreement is None for t in result.model("original").tasks)


def test_cross_check_and_per_row_labels(zoo, suite_file, result):
    task0 = result.model("original").task("task0")
    cross = next(d for d in task0.datasets if d.dataset == "g2")  # task1's data: expect benign
    assert cross.expect == "benign" and cross.support == N
    mixed = next(d for d in result.model("original").task("task2").datasets if d.dataset == "mixed")
    assert mixed.expect == "column letter" and mixed.support == 16
    (data,) = [d for d in load_datasets(load_suite(suite_file)) if d.name == "mixed"]
    preds = independent_predictions(zoo.models[2], [data])["mixed"]
    assert mixed.accuracy == pytest.approx(np.mean(preds == np.array(list("wxyz") * 4)))
    info = {d.name: d for d in result.datasets}
    assert info["mixed"].expect == {"task2": "column letter"} and info["g1"].rows == N


def test_each_classifier_predicts_each_distinct_text_once(zoo, suite_file, monkeypatch):
    seen: dict[str, list[str]] = {}
    clfs = {}
    for i, path in enumerate(zoo.models):
        clf = load(path)
        real = clf.logits

        def counting(texts, batch_size=32, _real=real, _name=f"task{i}"):
            seen.setdefault(_name, []).extend(texts)
            return _real(texts, batch_size)

        monkeypatch.setattr(clf, "logits", counting)
        clfs[f"task{i}"] = clf
    evaluate(load_suite(suite_file), {}, originals=clfs, batch_size=4, progress=False)
    datasets = {d.name: d for d in load_datasets(load_suite(suite_file))}
    # task2 reads g0, g1 and mixed; mixed repeats 8 of g0's texts, which run once
    want = set(datasets["g0"].texts) | set(datasets["g1"].texts) | set(datasets["mixed"].texts)
    assert sorted(seen["task2"]) == sorted(want)
    assert sorted(seen["task1"]) == sorted(set(datasets["g0"].texts + datasets["g2"].texts))


@pytest.fixture(scope="module")
def merged(zoo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("merged")
    recipe = write_merge_yaml(root / "merge.yaml", zoo.base, zoo.models, "ties")
    config = MergeConfig.from_yaml(recipe)
    return merge(config, root / "merged", progress=False).path


def test_merged_model_answers_every_task_from_one_pass(zoo, suite_file, merged, monkeypatch):
    clf = load(merged)
    seen: list[str] = []
    real = clf.logits

    def counting(texts, batch_size=32):
        seen.extend(texts)
        return real(texts, batch_size)

    monkeypatch.setattr(clf, "logits", counting)
    originals = {f"task{i}": path for i, path in enumerate(zoo.models)}
    got = evaluate(load_suite(suite_file), {"ties": clf}, originals=originals, progress=False)
    datasets = load_datasets(load_suite(suite_file))
    assert sorted(seen) == sorted({t for d in datasets for t in d.texts})  # each text once
    model = got.model("ties")
    assert [t.task for t in model.tasks] == ["task0", "task1", "task2"]
    assert model.sources == {f"task{i}": str(merged) for i in range(3)}
    monkeypatch.undo()
    predicted = load(merged).predict(list(dict.fromkeys(t for d in datasets for t in d.texts)))
    by_text = dict(zip(dict.fromkeys(t for d in datasets for t in d.texts), predicted, strict=True))
    for score in model.tasks:
        used = [d for d in datasets if score.task in d.expected]
        y_true = np.concatenate([d.expected[score.task] for d in used])
        y_pred = [by_text[t].tasks[score.task].label for d in used for t in d.texts]
        assert score.f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
        theirs = independent_predictions(zoo.models[int(score.task[-1])], used)
        theirs = np.concatenate([theirs[d.name] for d in used])
        differ = np.asarray(y_pred, object) != theirs
        assert score.agreement.rate == pytest.approx(1 - differ.mean())
        assert score.agreement.differ == differ.sum()
        assert score.agreement.model_right == (np.asarray(y_pred, object) == y_true)[differ].sum()
        assert score.agreement.original_right == (theirs == y_true)[differ].sum()
    assert got.average_f1("ties") == pytest.approx(np.mean([t.f1 for t in model.tasks]))
    assert got.average_f1("original", ["task0", "task2"]) == pytest.approx(
        np.mean([got.model("original").task(t).f1 for t in ("task0", "task2")])
    )


def test_originals_must_be_single_task(merged, suite_file):
    with pytest.raises(Hm3Error, match="single-task"):
        evaluate(load_suite(suite_file), {}, originals={"task0": merged}, progress=False)


def test_bootstrap_compares_each_model_with_the_originals(zoo, suite_file, merged):
    originals = {f"task{i}": path for i, path in enumerate(zoo.models)}
    got = evaluate(
        load_suite(suite_file),
        {"ties": merged, "single0": zoo.models[0]},
        originals=originals,
        bootstrap=200,
        progress=False,
    )
    assert got.model("original").vs_original is None
    same = got.model("single0").vs_original  # the original of task0 itself
    assert same.tasks == ("task0",) and (same.difference, same.low, same.high) == (0, 0, 0)
    assert got.average_f1("single0") != got.average_f1("original")  # compared on task0 only
    vs = got.model("ties").vs_original
    assert vs.tasks == ("task0", "task1", "task2") and (vs.draws, vs.seed) == (200, 0)
    want = got.average_f1("ties") - got.average_f1("original")
    assert vs.difference == pytest.approx(want, abs=1e-12) and vs.low < vs.high
    assert EvaluationResult.from_json(got.to_json()) == got
    plain = evaluate(load_suite(suite_file), {"ties": merged}, originals=originals, progress=False)
    assert plain.model("ties").vs_original is None


def test_bootstrap_needs_originals_and_a_model(zoo, suite_file):
    suite, one = load_suite(suite_file), {"task0": zoo.models[0]}
    with pytest.raises(Hm3Error, match=r"compares .*\(originals=\{TASK: DIR\}\) or set bootstrap"):
        evaluate(suite, {"m": zoo.models[0]}, bootstrap=10, progress=False)
    with pytest.raises(Hm3Error, match=r"bootstrap: no model to compare"):
        evaluate(suite, {}, originals=one, bootstrap=10, progress=False)
    with pytest.raises(Hm3Error, match=r"bootstrap: expected a number of redraws >= 0"):
        evaluate(suite, {"m": zoo.models[0]}, originals=one, bootstrap=-1, progress=False)
    # a model that answers none of the originals' tasks: refused before anything runs
    other, part = {"task1": zoo.models[1]}, suite.restricted(["task0", "task1"])
    with pytest.raises(Hm3Error, match=r"no model answers a task the originals answer"):
        evaluate(part, {"m": zoo.models[0]}, originals=other, bootstrap=10, progress=False)
    got = evaluate(  # a numpy integer is a number of redraws too
        suite.restricted(["task0"]),
        {"m": zoo.models[0]},
        originals=one,
        bootstrap=np.int64(5),
        progress=False,
    )
    assert got.model("m").vs_original.draws == 5


def test_results_json_round_trip(result):
    data = json.loads(result.to_json())
    assert data["version"] == 3 and data["models"][0]["kind"] == "original"
    assert data["models"][0]["sources"]["task1"].endswith("task1")
    assert data["models"][1]["tasks"][0]["agreement"]["rate"] == 1.0
    assert EvaluationResult.from_json(result.to_json()) == result
    # a version-2 file (before vs_original) and a version-1 file (before agreement) still read
    data["version"] = 2
    for model in data["models"]:
        del model["vs_original"]
    assert EvaluationResult.from_json(json.dumps(data)) == result
    data["version"] = 1
    for model in data["models"]:
        for task in model["tasks"]:
            del task["agreement"]
    old = EvaluationResult.from_json(json.dumps(data))
    assert old.model("single0").task("task0").agreement is None and old.version == 3
    assert EvaluationResult.from_json(old.to_json()) == old
    data["version"] = 4  # written by a newer hm3
    with pytest.raises(Hm3Error, match=r"version 4.*upgrade hm3"):
        EvaluationResult.from_json(json.dumps(data))


def test_errors_against_the_models_name_the_dataset(zoo, tmp_path):
    rows = [{"text": "hello", "y": "benign"}, {"text": "bye", "y": "evil"}]
    write_rows(tmp_path / "d.jsonl", rows)

    def error(expect: dict, models: dict | None = None, **kw) -> str:
        doc = {"datasets": [{"name": "my_set", "path": "d.jsonl", "expect": expect}]}
        suite = load_suite(write_suite(tmp_path / "s.yaml", doc))
        models = models if models is not None else {"m": zoo.models[0]}
        with pytest.raises(Hm3Error) as exc:
            evaluate(suite, models, progress=False, **kw)
        return str(exc.value)

    msg = error({"jailbreak": "benign"})
    assert "'my_set'" in msg and "'jailbreak'" in msg and "valid tasks: task0" in msg
    msg = error({"task0": "harmless"})
    assert "'my_set'" in msg and "'harmless'" in msg and "benign, jailbreak" in msg
    msg = error({"task0": {"column": "y"}})
    assert "'my_set'" in msg and "'evil'" in msg and "(row 2, column 'y')" in msg
    assert "nothing to evaluate" in error({"task0": "benign"}, {})
    assert "batch_size" in error({"task0": "benign"}, batch_size=0)
    msg = error({"task0": "benign"}, {"m": zoo.models[0]}, originals={"task0": zoo.models[2]})
    assert "task 'task0'" in msg and "benign, jailbreak" in msg and "w, x, y, z" in msg
    taken = {"original": zoo.models[0]}
    assert "'original'" in error({"task0": "benign"}, taken, originals={"task0": zoo.models[0]})
    assert "not found" in error({"task0": "benign"}, {"m": tmp_path / "nope"})


def test_placeholder_labels_take_the_names_another_model_gives(zoo, tmp_path):
    """An original without label names (class_0..2) lines up with a model that names them."""
    named = tmp_path / "named" / "task1"
    shutil.copytree(zoo.models[1], named)
    config = json.loads((named / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b", "2": "c"}
    config["label2id"] = {"a": 0, "b": 1, "c": 2}
    (named / "config.json").write_text(json.dumps(config))
    write_rows(tmp_path / "d.jsonl", [{"text": t} for t in group_texts(1, 10, seed=3)])
    doc = {"datasets": [{"name": "d", "path": "d.jsonl", "expect": {"task1": "b"}}]}
    suite = load_suite(write_suite(tmp_path / "s.yaml", doc))
    got = evaluate(suite, {"named": named}, originals={"task1": zoo.models[1]}, progress=False)
    assert [t.labels for t in got.tasks] == [("a", "b", "c")]
    original, renamed = got.model("original").task("task1"), got.model("named").task("task1")
    assert original.labels == ("a", "b", "c") and original.confusion == renamed.confusion
    assert (renamed.agreement.rate, renamed.agreement.differ) == (1.0, 0)  # same model, renamed
    with pytest.raises(Hm3Error, match="must share its labels"):
        evaluate(suite, {"named": named}, originals={"task1": zoo.models[2]}, progress=False)


def test_parse_named_paths(tmp_path):
    (tmp_path / "a=b").mkdir()
    specs = ["x=some/dir", str(tmp_path / "a=b"), "models/ties"]
    got = parse_named_paths(specs, "MODEL", need_name=False)
    assert got == {"x": Path("some/dir"), "a=b": tmp_path / "a=b", "ties": Path("models/ties")}
    for specs, need, match in [
        (["dir"], True, "TASK=DIR"),
        (["=dir"], False, "name"),
        (["a/m", "b/m"], False, "'m' given twice; name one with NAME=DIR"),
        (["t=a", "t=b"], True, "'t' given twice; give each a name of its own"),
    ]:
        with pytest.raises(Hm3Error, match=match):
            parse_named_paths(specs, "--originals", need_name=need)


# -- the command line ------------------------------------------------------------------------
def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_cli_tables_json_and_report(zoo, suite_file, tmp_path, capsys):
    models = [f"m{i}={p}" for i, p in enumerate(zoo.models)]
    originals = [a for i, p in enumerate(zoo.models) for a in ("--originals", f"task{i}={p}")]
    code, out, err = run(capsys, "evaluate", suite_file, *models, *originals, "--no-progress")
    assert code == 0, err
    assert "Average macro-F1" in out and "Accuracy per dataset" in out and "m2" in out
    assert "Agreement with the originals" in out
    code, out, err = run(
        capsys,
        "evaluate",
        suite_file,
        *originals,
        "--json",
        "--batch-size",
        "3",
        "--out",
        tmp_path / "report",
        "--no-progress",
    )
    assert code == 0, err
    parsed = EvaluationResult.from_json(out)
    assert [m.name for m in parsed.models] == ["original"]
    assert EvaluationResult.from_json((tmp_path / "report" / "results.json").read_text()) == parsed
    assert "Agreement" not in (tmp_path / "report" / "report.md").read_text()  # nothing to compare
    expect_user_error(capsys, tmp_path, "evaluate", suite_file, *originals, "--out",
                      tmp_path / "report", match="--force", names=tmp_path / "report",
                      watch=(suite_file.parent,))  # fmt: skip


def test_cli_bad_input_exits_2_naming_the_dataset(zoo, tmp_path, capsys):
    write_rows(tmp_path / "d.csv", [{"text": "a", "label": "benign"}])
    suite = write_suite(
        tmp_path / "s.yaml",
        {"datasets": [{"name": "my_set", "path": "d.csv", "expect": {"task0": {"column": "lbl"}}}]},
    )
    text = expect_user_error(capsys, tmp_path, "evaluate", suite, zoo.models[0], "--out",
                             tmp_path / "out", match="no column 'lbl'", names="'my_set'",
                             watch=(zoo.models[0],))  # fmt: skip
    assert "text, label" in text
    expect_user_error(capsys, tmp_path, "evaluate", suite, "--originals", zoo.models[0],
                      match="TASK=DIR", names="--originals")  # fmt: skip


def test_cli_tasks_evaluates_part_of_a_suite(zoo, suite_file, tmp_path, capsys, monkeypatch):
    only = ("--originals", f"task0={zoo.models[0]}")
    monkeypatch.chdir(tmp_path)  # a stray file written to the current directory would show
    keep = (suite_file.parent, zoo.models[0])
    expect_user_error(capsys, tmp_path, "evaluate", suite_file, *only, "--no-progress",
                      match="which no model being evaluated answers", names="--tasks",
                      watch=keep)  # fmt: skip
    code, out, err = run(capsys, "evaluate", suite_file, *only, "--tasks", "task0", "--json")
    assert code == 0, err
    parsed = EvaluationResult.from_json(out)
    assert [t.name for t in parsed.tasks] == ["task0"]
    assert [d.name for d in parsed.datasets] == ["g0", "g1", "g2"]  # mixed expects only task2
    assert all(set(d.expect) == {"task0"} for d in parsed.datasets)
    text = expect_user_error(capsys, tmp_path, "evaluate", suite_file, *only, "--tasks",
                             "task0,nope", match="task 'nope'", names=suite_file,
                             watch=keep)  # fmt: skip
    assert "task0, task1, task2" in text and text.endswith("; choose --tasks from those")
    for empty in ("", ",", " "):
        expect_user_error(capsys, tmp_path, "evaluate", suite_file, *only, "--tasks", empty,
                          match="names no task; give TASK[,TASK...]", names="--tasks",
                          watch=keep)  # fmt: skip


def test_cli_bootstrap(zoo, suite_file, tmp_path, capsys):
    m0, originals = f"m0={zoo.models[0]}", ("--originals", f"task0={zoo.models[0]}")
    only = ("--tasks", "task0", "--no-progress")
    code, out, err = run(capsys, "evaluate", suite_file, m0, *originals, *only, "--bootstrap", "50")
    text = " ".join(out.split())
    assert code == 0, err
    assert "vs originals" in text and "+0.000 [+0.0000, +0.0000]" in text
    assert "50 paired redraws" in text
    argv = ("evaluate", suite_file, m0, *originals, *only, "--bootstrap", "50")
    code, _, err = run(capsys, *argv, "--out", tmp_path / "r")
    assert code == 0, err
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| vs originals |" in report and "50 paired redraws" in report
    assert "**vs originals**" in report  # the metric's definition
    expect_user_error(capsys, tmp_path, "evaluate", suite_file, m0, *only, "--bootstrap", "50",
                      match="--originals TASK=DIR", names="--bootstrap",
                      watch=(suite_file.parent,))  # fmt: skip
    expect_user_error(capsys, tmp_path, "evaluate", suite_file, m0, *originals, *only,
                      "--bootstrap", "-1", match="greater than or equal to 0",
                      names="'--bootstrap'", watch=(suite_file.parent,))  # fmt: skip
