"""A model directory given through a link answers under the link's name, as ``hm3 merge`` names
it, in every command: the name a user wrote is the one a suite must use (not the target's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import hm3
from hm3.io.paths import dir_name
from search_case import write_jsonl
from tiny import toy_texts


def test_dir_name_keeps_a_link_and_makes_dots_absolute(tmp_path, monkeypatch):
    target = tmp_path / "models" / "task0-0123abcd"
    target.mkdir(parents=True)
    (tmp_path / "guard").symlink_to(target)
    monkeypatch.chdir(target)
    assert dir_name(tmp_path / "guard") == dir_name(f"{tmp_path}/guard/") == "guard"
    assert dir_name(".") == "task0-0123abcd" and dir_name("..") == "models"


def test_every_command_names_a_linked_model_after_the_link(zoo_of, tmp_path, one_thread):
    from hm3.cli.app import main

    zoo = zoo_of("bert")
    links = {"guard": zoo.models[0], "mood": zoo.models[2]}
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
        assert target.name != name
        assert [t.name for t in hm3.load(tmp_path / name).tasks] == [name]  # predict, evaluate
    config = tmp_path / "merge.yaml"  # no name: the tasks are named after the paths
    models = [{"model": f"./{name}"} for name in links]
    doc = {"base_model": str(zoo.base), "merge_method": "dare_ties", "models": models, "seed": 1}
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    merged = hm3.merge(hm3.MergeConfig.from_yaml(config), tmp_path / "merged", progress=False)
    assert [t.name for t in hm3.load(merged.path).tasks] == list(links)
    datasets = []
    for name, labels in zip(links, (["benign", "jailbreak"], ["w", "x"]), strict=True):
        rows = [{"text": t, "label": labels[i % 2]} for i, t in enumerate(toy_texts(24, seed=3))]
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
        datasets.append({"name": f"d_{name}", "path": f"{name}.jsonl",
                         "expect": {name: {"column": "label"}}})  # fmt: skip
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"datasets": datasets}), encoding="utf-8")
    out = tmp_path / "search"
    with pytest.raises(SystemExit) as exc:  # the suite names the tasks as the merge does
        main(["search", str(config), "--suite", str(suite), "--out", str(out), "--trials", "1",
              "--val-samples", "8", "--test-samples", "8", "--no-progress"])  # fmt: skip
    assert exc.value.code in (0, None)
    recipe = yaml.safe_load((out / "best" / "recipe.yaml").read_text())
    assert [m["name"] for m in recipe["models"]] == list(links)
    assert [Path(m["model"]) for m in recipe["models"]] == [p.resolve() for p in links.values()]
    assert [t.name for t in hm3.load(out / "best").tasks] == list(links)


def test_a_model_given_as_dot_is_named_after_its_directory(zoo_of, tmp_path, monkeypatch):
    """`model: .` (the config inside the model's directory) or `..`: the task is named after
    the directory they stand for, by hm3 merge and in a search's recipe alike, never ''."""
    import shutil

    from hm3.search.trial import absolute_recipe

    zoo = zoo_of("bert")
    guard = Path(shutil.copytree(zoo.models[0], tmp_path / "guard"))
    (guard / "inner").mkdir()
    doc = {"base_model": str(zoo.base), "merge_method": "ties",
           "models": [{"model": "."}, {"model": str(zoo.models[2])}]}  # fmt: skip
    (guard / "m.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    doc["models"][0]["model"] = ".."
    (guard / "inner" / "m.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    for config, where in ((guard / "m.yaml", guard), (guard / "inner" / "m.yaml", guard / "inner")):
        monkeypatch.chdir(where)
        loaded = hm3.MergeConfig.from_yaml(config.name)  # relative: resolved from the cwd
        merged = hm3.merge(loaded, tmp_path / f"out-{where.name}", progress=False)
        names = [t.name for t in hm3.load(merged.path).tasks]
        assert names == ["guard", zoo.models[2].name]
        recipe = absolute_recipe(yaml.safe_load(config.read_text()), loaded)
        assert [m.get("name", dir_name(m["model"])) for m in recipe["models"]] == names
