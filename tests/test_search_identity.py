"""A study's identity (hm3.search.identity): a model, suite or dataset changed in place since the
study started is refused on --resume and on joining, by name, and nothing is written."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from safetensors.torch import load_file, save_file

from hm3.errors import Hm3Error
from hm3.search import identity
from search_case import fails, make_case
from test_cli import tree

SMALL = ["--val-samples", "8", "--test-samples", "8", "--no-progress", "--trials", "1"]


def _argv(case, out, *extra):
    return ["search", str(case.config), "--suite", str(case.suite), "--out", str(out), *SMALL,
            *extra]  # fmt: skip


def _ok(argv):
    from hm3.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)


@pytest.fixture
def copied(tmp_path, zoo_of):
    """A case on copies of the tiny zoo's models, which the test may change."""
    zoo = zoo_of("bert")
    models = tmp_path / "models"
    copies = [shutil.copytree(d, models / d.name) for d in (zoo.base, *zoo.models)]
    return make_case(tmp_path / "case", SimpleNamespace(base=copies[0], models=copies[1:]))


def _nudge_weights(model: Path) -> None:
    """Retrain in place, as far as the files can tell: one tensor moves, every name and shape
    stays (so the safetensors header's offsets do not change)."""
    path = model / "model.safetensors"
    tensors = load_file(path)
    name = next(k for k in tensors if k.endswith("attention.self.query.weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, path, metadata={"format": "pt"})


def test_resume_after_a_model_changed_in_place_is_refused(copied, tmp_path, capsys, one_thread):
    out = tmp_path / "out"
    _ok(_argv(copied, out))
    before = tree(out)
    _nudge_weights(copied.models[1])
    line = fails(capsys, [*_argv(copied, out, "--resume")], "--resume:", str(copied.models[1]),
                 "changed since", "restore it, or start a new study")  # fmt: skip
    assert "and 1 more" not in line
    assert tree(out) == before


def test_a_worker_whose_dataset_differs_is_refused(copied, tmp_path, capsys, one_thread):
    shared = tmp_path / "shared.journal"
    _ok(_argv(copied, tmp_path / "w1", "--storage", str(shared)))
    rows = (copied.root / "task2.jsonl").read_text().splitlines()
    (copied.root / "task2.jsonl").write_text("\n".join(rows[1:] + rows[:1]) + "\n")  # reordered
    before = shared.read_bytes()
    fails(capsys, _argv(copied, tmp_path / "w2", "--storage", str(shared)),
          "--storage/--study:", "task2.jsonl", "changed since", "(--study NAME)")  # fmt: skip
    assert shared.read_bytes() == before and not (tmp_path / "w2").exists()


def test_what_does_not_change_a_model_does_not_stop_a_resume(copied, tmp_path, one_thread):
    out = tmp_path / "out"
    _ok(_argv(copied, out))
    (copied.models[0] / "README.md").write_text("notes about the model\n")
    _ok(_argv(copied, out, "--resume", "--trials", "2"))


def test_contents_hash_a_models_files_and_skip_what_does_not_exist(copied, tmp_path):
    model = copied.models[0]
    first = identity.contents([model, tmp_path / "absent", copied.suite])
    assert list(first) == [str(model.absolute()), str(copied.suite.absolute())]
    (model / "notes.md").write_text("x")
    assert identity.contents([model]) == {str(model.absolute()): first[str(model.absolute())]}
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    assert identity.contents([model])[str(model.absolute())] != first[str(model.absolute())]


def test_a_study_without_recorded_contents_gets_them_then_checks_them():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="old", storage=storage)
    spec = {"seed": 0, "recipe": {"merge_method": "ties"}}
    # stored before contents and the description were recorded: only the hash
    study.set_user_attr(identity.FINGERPRINT, identity.fingerprint(spec))
    with pytest.raises(Hm3Error, match="another config, samples, objective, sampler or seed;"):
        identity.check(study, storage, {"seed": 1}, {"/m": "aa"}, how="--resume", fresh="x")
    identity.check(study, storage, spec, {"/m": "aa"}, how="--resume", fresh="a new --out")
    assert study.user_attrs[identity.CONTENTS] == {"/m": "aa"}
    assert study.user_attrs[identity.SPEC] == spec  # recorded by the run that matched
    identity.check(study, storage, spec, {"/m": "aa", "/new": "bb"}, how="--resume", fresh="x")
    with pytest.raises(Hm3Error, match=r"^--resume: /m changed since study 'old' started"):
        identity.check(study, storage, spec, {"/m": "ab"}, how="--resume", fresh="x")
    refused = (
        r"^--resume: study 'old' was started with another --seed \(0 then, 1 now\); run "
        r"it with the same ones, or start a new study \(x\)$"
    )
    with pytest.raises(Hm3Error, match=refused):
        identity.check(study, storage, {**spec, "seed": 1}, {"/m": "aa"}, how="--resume",
                       fresh="x")  # fmt: skip


def test_a_refusal_names_each_option_that_differs():
    models = [{"model": "a", "weight": 1.0}, {"model": "b", "weight": 1.0}]
    then = {"seed": 0, "val": 600, "recipe": {"models": models},
            "space": {"density": {"beta": [1.2, 2.0]}}}  # fmt: skip
    now = {"seed": 0, "val": 300, "dtype": "bfloat16", "recipe": {"models": [
        {"model": "a", "weight": 1.0}, {"model": "b", "weight": 0.5}]},
        "space": {"density": {"beta": [1.2, 3.0]}}}  # fmt: skip
    assert identity.differences(then, now) == (
        "CONFIG's models[1].weight (1.0 then, 0.5 now), CONFIG's search.density.beta[1] "
        "(2.0 then, 3.0 now) and 2 more"
    )
    assert identity.differences({"self": None, "recipe": {"a": 1}}, {"self": "/m", "recipe": {}}) \
        == "CONFIG's a (1 then, none now) and --self (none then, /m now)"  # fmt: skip
    assert identity.differences({"seed": 0}, {"seed": 0, "dtype": "float32"}) == ""
