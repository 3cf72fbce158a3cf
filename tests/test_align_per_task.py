"""Head alignment with a text file per task: each head fitted on its own task's texts only.

The defining property: aligning with ``{task: file}`` writes, for every task, exactly the head
rows that aligning on that task's file alone writes (same ridge, same body scale); a file named
for two tasks is read once. ``hm3 merge`` with ``align.texts: {TASK: FILE}`` and a search trial
with it give the same model. Bad mappings are one line, before any model runs.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import hm3
from hm3.alignment.api import align
from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from test_alignment import merge_models, projection_name, write_texts
from test_cli import expect_user_error, run
from tiny import toy_texts, write_merge_yaml

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = ("task0", "task1", "task2")


@pytest.fixture(scope="module")
def merged(zoo_of, tmp_path_factory):
    zoo = zoo_of("bert")
    root = tmp_path_factory.mktemp("per-task")
    a = write_texts(root / "a.jsonl", toy_texts(50, seed=11))
    b = write_texts(root / "b.csv", toy_texts(40, seed=12))
    model = merge_models(root / "merged", zoo, zoo.models, "ties", density=0.5)
    return zoo, model, a, b


def _rows(model_dir, projection):
    tensors = load_file(str(model_dir / "model.safetensors"))
    return tensors, {name: tensors[name] for name in projection}


@pytest.mark.parametrize(("ridge", "scale"), [(0.1, 1.0), ("auto", 1.0), (0.3, 1.5)])
def test_each_head_equals_aligning_on_its_own_file_alone(merged, tmp_path, ridge, scale):
    _, model, a, b = merged
    kw = dict(ridge=ridge, scale=scale, progress=False)
    per = align(model, {"task0": a, "task1": b, "task2": a}, tmp_path / "per", **kw)
    align(model, a, tmp_path / "a", **kw)
    align(model, b, tmp_path / "b", **kw)
    names = projection_name(model)
    tensors, rows = _rows(tmp_path / "per", names)
    alone_a, rows_a = _rows(tmp_path / "a", names)
    _, rows_b = _rows(tmp_path / "b", names)
    segments = {t.name: slice(t.start, t.end) for t in hm3.load(model).tasks}
    for name in names:
        for task, alone in (("task0", rows_a), ("task1", rows_b), ("task2", rows_a)):
            assert torch.equal(rows[name][segments[task]], alone[name][segments[task]]), task
    assert per.n_texts == 90  # each file read once
    body = [k for k in tensors if k not in names]
    assert all(torch.equal(tensors[k], alone_a[k]) for k in body)  # the same (scaled) body
    joint = align(model, a, tmp_path / "joint", ridge=ridge, scale=scale, progress=False)
    assert [t.rmse_after for t in per.tasks][0::2] == [t.rmse_after for t in joint.tasks][0::2]


def test_record_and_model_card_name_each_tasks_file(merged, tmp_path):
    _, model, a, b = merged
    result = align(model, {"task0": a, "task1": b, "task2": b}, tmp_path / "o", progress=False)
    record = json.loads((tmp_path / "o" / "config.json").read_text())["hm3"]["align"]
    assert record["texts"] == {"task0": str(a.resolve()), "task1": str(b.resolve()),
                               "task2": str(b.resolve())}  # fmt: skip
    assert record["n_texts"] == {"task0": 50, "task1": 40, "task2": 40}
    assert record["texts_sha256"]["task1"] == record["texts_sha256"]["task2"]
    assert record["texts_sha256"] == result.texts_sha256
    assert record["texts_sha256"]["task0"] != record["texts_sha256"]["task1"]
    card = (tmp_path / "o" / "README.md").read_text()
    assert "each head on its own task's file only" in card and "`task1` on 40 of `b.csv`" in card


@pytest.mark.parametrize(
    ("texts", "match"),
    [({"task0": "a", "task1": "b"}, "no file for task 'task2'"),
     ({"task0": "a", "task1": "b", "task2": "a", "spam": "b"}, "'spam' is no task of the merge")],
    ids=["missing", "unknown"],
)  # fmt: skip
def test_a_mapping_without_every_task_is_refused_before_any_pass(merged, tmp_path, texts, match):
    _, model, a, b = merged
    files = {task: {"a": a, "b": b}[which] for task, which in texts.items()}
    with pytest.raises(Hm3Error, match=match) as err:
        align(model, files, tmp_path / "o", progress=False)
    assert "\n" not in str(err.value) and str(err.value).startswith("texts_file: ")
    assert not (tmp_path / "o").exists()


def test_a_tasks_bad_file_is_named_with_its_task(merged, tmp_path, capsys):
    _, model, a, _ = merged
    files = {"task0": a, "task1": tmp_path / "nope.csv", "task2": a}
    with pytest.raises(Hm3Error, match=r"^texts_file\['task1'\]='.*nope\.csv': file not found"):
        align(model, files, tmp_path / "o", progress=False)
    given = [arg for t, f in files.items() for arg in ("--texts", f"{t}={f}")]
    expect_user_error(capsys, tmp_path, "align", model, *given, "--out", tmp_path / "o",
                      "--no-progress", match="file not found",
                      names=f"--texts task1={tmp_path / 'nope.csv'}:", watch=(model,))  # fmt: skip


def test_files_opened_in_different_columns_are_refused(merged, tmp_path):
    from hm3.io.texts import open_texts

    _, model, a, b = merged
    body = write_texts(tmp_path / "body.jsonl", toy_texts(30, seed=16), column="body")
    files = {"task0": open_texts(body, "body"), "task1": b, "task2": a}
    with pytest.raises(Hm3Error, match=r"different columns \(body, text\)"):
        align(model, files, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_takes_task_equals_file_for_every_task(merged, tmp_path, capsys):
    _, model, a, b = merged
    given = ["--texts", f"task0={a}", "--texts", f"task1={b}", "--texts", f"task2={a}"]
    code, _, err = run(capsys, "align", model, *given, "--out", tmp_path / "o", "--no-progress")
    assert code == 0, err
    assert "aligned 3 tasks on 90 texts" in err


@pytest.mark.parametrize(
    ("texts", "match"),
    [(["task0={a}", "task1={b}"], "--texts TASK=FILE: no file for task 'task2'"),
     (["{a}", "task1={b}"], "with several --texts, each is TASK=FILE")],
    ids=["missing", "mixed"],
)  # fmt: skip
def test_cli_bad_mapping_exits_2_with_one_line(merged, tmp_path, capsys, texts, match):
    _, model, a, b = merged
    given = [arg for t in texts for arg in ("--texts", t.format(a=a, b=b))]
    expect_user_error(capsys, tmp_path, "align", model, *given, "--out", tmp_path / "o",
                      "--no-progress", match=match, names="--texts", watch=(model,))  # fmt: skip


def test_merge_yaml_with_a_file_per_task_equals_merge_then_align(bert_zoo, tmp_path):
    write_texts(tmp_path / "a.jsonl", toy_texts(40, seed=13))
    write_texts(tmp_path / "b.jsonl", toy_texts(30, seed=14))
    files = {"task0": "a.jsonl", "task1": "b.jsonl", "task2": "b.jsonl"}
    params = {"density": 0.5}
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "ties",
                           parameters=params, align={"texts": files, "ridge": 0.2})  # fmt: skip
    hm3.merge(MergeConfig.from_yaml(cfg), tmp_path / "one", progress=False)
    plain = write_merge_yaml(tmp_path / "p.yaml", bert_zoo.base, bert_zoo.models, "ties",
                             parameters=params)  # fmt: skip
    hm3.merge(MergeConfig.from_yaml(plain), tmp_path / "merged", progress=False)
    by_task = {task: tmp_path / name for task, name in files.items()}
    align(tmp_path / "merged", by_task, tmp_path / "two", ridge=0.2, progress=False)
    one, two = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize(
    ("files", "match"),
    [({"task0": "a.jsonl", "task1": "a.jsonl"}, "align.texts: no file for task 'task2'"),
     ({"task0": "a.jsonl", "task1": "a.jsonl", "task2": "a.jsonl", "x": "a.jsonl"},
      "align.texts: 'x' is no task of the merge"),
     ({"task0": "a.jsonl", "task1": "a.jsonl", "task2": "nope.jsonl"},
      "align.texts.task2: file nope.jsonl not found")],
    ids=["missing", "unknown", "no-file"],
)  # fmt: skip
def test_merge_yaml_bad_mapping_fails_before_merging(bert_zoo, tmp_path, files, match):
    write_texts(tmp_path / "a.jsonl", toy_texts(10, seed=15))
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "ties",
                           align={"texts": files})  # fmt: skip
    config = MergeConfig.from_yaml(cfg)
    # no base model at all: were the models opened first, the error would be about them
    config = config.model_copy(update={"base_model": str(tmp_path / "no-such-base")})
    with pytest.raises(Hm3Error, match=match):
        hm3.merge(config, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "m.yaml"]
