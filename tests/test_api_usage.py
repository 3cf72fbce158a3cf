"""The Python API used as a library user uses it: configs and suites whose paths stay theirs
after an ``os.chdir``, ``pathlib.Path`` values anywhere a path goes, a config written out to
another folder, run options a call does not read, and results read back. Each refusal is one
:class:`hm3.Hm3Error`. On the shared tiny zoo (real checkpoints; no mocks of hm3's own code).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import hm3
from hm3.evaluation.results import EvaluationResult
from hm3.evaluation.suite import Suite, load_suite
from hm3.merging.config import MergeConfig
from tiny import write_merge_yaml


def _relative_config(tmp_path: Path, zoo) -> Path:
    """``cfg/merge.yaml`` beside copies of the zoo's base and two models, by relative paths."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    for name, src in (("base", zoo.base), ("a", zoo.models[0]), ("b", zoo.models[1])):
        shutil.copytree(src, folder / name)
    doc = {"base_model": "base", "merge_method": "ties", "models": [{"model": "a"}, {"model": "b"}]}
    (folder / "merge.yaml").write_text(yaml.safe_dump(doc))
    return folder / "merge.yaml"


def _weights(path: Path) -> bytes:
    return (path / "model.safetensors").read_bytes()


def test_a_config_read_by_a_relative_path_survives_a_chdir(bert_zoo, tmp_path, monkeypatch):
    _relative_config(tmp_path, bert_zoo)
    monkeypatch.chdir(tmp_path)
    config = MergeConfig.from_yaml("cfg/merge.yaml")
    same = MergeConfig.from_dict(yaml.safe_load(Path("cfg/merge.yaml").read_text()), root="cfg")
    monkeypatch.chdir("/")
    assert config.root == same.root == tmp_path / "cfg"
    one = hm3.merge(config, tmp_path / "one", progress=False)
    two = hm3.merge(same, tmp_path / "two", progress=False)  # a str root: no TypeError
    assert _weights(one.path) == _weights(two.path)


def test_to_yaml_with_absolute_paths_merges_from_anywhere(bert_zoo, tmp_path):
    config = MergeConfig.from_yaml(_relative_config(tmp_path, bert_zoo))
    kept = tmp_path / "elsewhere" / "merge.yaml"
    kept.parent.mkdir()
    kept.write_text(config.to_yaml())  # as given: relative to cfg/, so wrong here
    with pytest.raises(hm3.Hm3Error, match="base_model: base is not a local directory"):
        hm3.merge(MergeConfig.from_yaml(kept), tmp_path / "bad", progress=False)
    kept.write_text(config.to_yaml(absolute_paths=True))
    written = yaml.safe_load(kept.read_text())
    assert written["base_model"] == str(tmp_path / "cfg" / "base")
    assert [m["model"] for m in written["models"]] == [str(tmp_path / "cfg" / n) for n in "ab"]
    moved = hm3.merge(MergeConfig.from_yaml(kept), tmp_path / "moved", progress=False)
    here = hm3.merge(config, tmp_path / "here", progress=False)
    assert _weights(moved.path) == _weights(here.path)
    assert [t.name for t in moved.tasks] == [t.name for t in here.tasks] == ["a", "b"]


def test_paths_may_be_pathlib_paths(bert_zoo, tmp_path):
    config = MergeConfig(base_model=bert_zoo.base, merge_method="ties",
                         models=[{"model": m} for m in bert_zoo.models[:2]])  # fmt: skip
    assert config.base_model == str(bert_zoo.base)
    merged = hm3.merge(config, tmp_path / "m", progress=False).path
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"text {i}"}) + "\n" for i in range(4)))
    task = hm3.load(merged).tasks[0]
    suite = Suite(datasets=[{"name": "d", "path": rows, "expect": {task.name: task.labels[0]}}])
    report = hm3.evaluate(suite, {"merged": merged}, progress=False)
    assert report.average_f1("merged") is not None


def test_a_suite_read_by_a_relative_path_survives_a_chdir(bert_zoo, tmp_path, monkeypatch):
    model = bert_zoo.models[0]
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "rows.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    task = hm3.load(model).tasks[0]
    expect = {task.name: task.labels[0]}
    (folder / "suite.yaml").write_text(
        yaml.safe_dump({"datasets": [{"name": "d", "path": "rows.jsonl", "expect": expect}]})
    )
    monkeypatch.chdir(tmp_path)
    suite = load_suite("s/suite.yaml")
    monkeypatch.chdir("/")
    report = hm3.evaluate(suite, {"m": model}, progress=False)
    assert report.model("m").tasks[0].task == task.name


def test_align_given_a_loaded_model_as_its_base_is_one_error(bert_ties_merged, tmp_path):
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "a b c"}\n' * 4)
    loaded = hm3.load(bert_ties_merged)
    with pytest.raises(hm3.Hm3Error, match=r"base_model: expected a path .*base_model=model\.path"):
        hm3.align(bert_ties_merged, texts, tmp_path / "o", scale=2, base_model=loaded)
    assert not (tmp_path / "o").exists()


def test_options_a_call_does_not_read_are_refused(bert_zoo, bert_ties_merged, tmp_path):
    refused = r"batch_size: not read here .*predict\(texts, batch_size"
    with pytest.raises(hm3.Hm3Error, match=refused):
        hm3.load(bert_ties_merged, batch_size=4)
    config = MergeConfig.from_yaml(write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base,
                                                    bert_zoo.models[:2]))  # fmt: skip
    with pytest.raises(hm3.Hm3Error, match=r"max_length: not read here .*align: or regmean:"):
        hm3.merge(config, tmp_path / "out", max_length=64)
    assert not (tmp_path / "out").exists()
    clf = hm3.load(bert_ties_merged, options=hm3.RunOptions(batch_size=4))  # shared: left alone
    assert clf.predict(["hello"])


def test_a_tokenizer_file_that_is_json_but_no_tokenizer_is_one_error(bert_zoo, tmp_path):
    model = shutil.copytree(bert_zoo.models[0], tmp_path / "m")
    for name in ("vocab.txt", "special_tokens_map.json", "tokenizer_config.json"):
        (model / name).unlink(missing_ok=True)
    (model / "tokenizer.json").write_text("{}")
    with pytest.raises(hm3.Hm3Error, match=r"its tokenizer cannot be loaded \(KeyError: "):
        hm3.load(model)


def test_results_read_back_and_queried_by_one_task(bert_ties_merged, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "one"}\n{"text": "two"}\n')
    task = hm3.load(bert_ties_merged).tasks[0]
    tasks = [task.name]
    suite = Suite(datasets=[{"name": "d", "path": rows, "expect": {task.name: task.labels[0]}}])
    report = hm3.evaluate(suite, {"merged": bert_ties_merged}, progress=False)
    assert report.average_f1("merged", tasks[0]) == report.average_f1("merged", [tasks[0]])
    assert report.average_f1("merged", tasks[0]) is not None  # not the tasks "t", "a", ...
    assert EvaluationResult.from_json(report.to_json()) == report
    for text, problem in (("{}", "suite: missing; add it"), ("[]", "valid dictionary"),
                          ("no json", "not JSON")):  # fmt: skip
        with pytest.raises(hm3.Hm3Error, match=r"results\.json: ") as exc:
            EvaluationResult.from_json(text)
        assert problem in str(exc.value) and "\n" not in str(exc.value)
