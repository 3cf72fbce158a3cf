"""hm3 search's outputs say what each trial drew, whichever trial drew what: trials.csv in the
documented column order, importance.png naming what fANOVA could not rank; a null `search:`
is refused as `search: {}` is."""

from __future__ import annotations

import csv
import logging

import pytest

from hm3.options import RunOptions
from hm3.search import outputs
from hm3.search.inputs import SearchSpec
from hm3.search.run import search
from search_case import make_case
from test_cli import expect_user_error

QUIET = RunOptions(progress=False)
#: docs/design.md, "What `hm3 search` writes in `--out`", for two tasks and one shared density
DOCUMENTED = ["number", "merge_method", "seed", "density", "val_task0", "val_task2",
              "val_average", "test_task0", "test_task2", "test_average", "objective", "pruned",
              "seconds"]  # fmt: skip


def _header(path):
    with path.open(newline="") as f:
        return next(csv.reader(f))


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_trials_csv_columns_do_not_depend_on_what_trial_0_drew(tmp_path, zoo_of, one_thread):
    """The reviewer's case: with --seed 1 trial 0 is tsv, which draws no density; the density
    column still comes right after seed, and the tsv trials' cells are empty."""
    space = {"merge_method": ["tsv", "ties"], "density": {"uniform": [0.2, 0.9]}}
    case = make_case(tmp_path / "case", zoo_of("bert"), search=space)
    spec = SearchSpec(config=case.config, suite=case.suite, trials=4, val_samples=8,
                      test_samples=8, seed=1)  # fmt: skip
    search(spec, tmp_path / "out", QUIET)
    rows = _rows(tmp_path / "out" / "trials.csv")
    assert rows[0]["merge_method"] == "tsv"  # the case this test is about
    assert {r["merge_method"] for r in rows} == {"tsv", "ties"}
    assert _header(tmp_path / "out" / "trials.csv") == DOCUMENTED
    for row in rows:
        assert (row["density"] == "") == (row["merge_method"] == "tsv"), row


def test_trials_csv_orders_parameters_as_the_space_and_scores_as_documented(tmp_path):
    """Whatever the first trial holds (pruned: no test score; no density; lambda drawn before
    density), parameters come in the space's order, per-model ones by task, scores per task
    then average, the test score before objective, pruned, seconds."""
    import optuna
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(direction="maximize")
    val = {"val": {"b": 0.4, "a": 0.2}, "val_average": 0.3, "seconds": 1.5, "seed": 7}
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            intermediate_values={0: 0.3},
            user_attrs={**val, "values": {"merge_method": "tsv"}},
        )
    )
    drew = {
        "merge_method": "ties",
        "lambda": 1.2,
        "weight[b]": 2.0,
        "weight[a]": 0.5,
        "zeta": 3.0,
        "density": 0.4,
    }
    study.add_trial(
        create_trial(
            value=0.5,
            user_attrs={**val, "values": drew, "test": {"b": 0.6, "a": 0.4}, "test_average": 0.5},
        )
    )
    third = {"merge_method": "tsv", "weight[b]": 1.0}
    study.add_trial(create_trial(value=0.2, user_attrs={**val, "values": third}))
    assert _header(outputs.write_trials_csv(study, tmp_path)) == [
        "number", "merge_method", "seed", "density", "weight[b]", "weight[a]", "lambda", "zeta",
        "val_b", "val_a", "val_average", "test_b", "test_a", "test_average", "objective",
        "pruned", "seconds",
    ]  # fmt: skip
    rows = _rows(tmp_path / "trials.csv")
    assert [r["density"] for r in rows] == ["", "0.4", ""]
    assert [r["test_average"] for r in rows] == ["", "0.5", ""]
    assert [r["objective"] for r in rows] == ["", "0.5", "0.2"]
    assert [r["pruned"] for r in rows] == ["True", "False", "False"]


def test_importance_names_the_parameters_fanova_could_not_rank(
    tmp_path, zoo_of, one_thread, monkeypatch, caplog
):
    """fANOVA ranks only what every complete trial drew: a tsv trial draws no density, so the
    density is not ranked; the plot and the log say so instead of dropping it silently."""
    space = {"merge_method": ["dare_ties", "ties", "tsv"], "density": {"uniform": [0.2, 0.9]},
             "weight": {"log_uniform": [0.5, 2], "per_model": True}}  # fmt: skip
    case = make_case(tmp_path / "case", zoo_of("bert"), search=space)
    titles = {}
    save = outputs._save

    def keep_title(fig, path):
        titles[path.name] = fig.axes[0].get_title()
        return save(fig, path)

    monkeypatch.setattr(outputs, "_save", keep_title)
    spec = SearchSpec(config=case.config, suite=case.suite, trials=6, val_samples=8,
                      test_samples=8, sampler="random", seed=1)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hm3"):
        search(spec, tmp_path / "out", QUIET)
    rows = [r for r in _rows(tmp_path / "out" / "trials.csv") if r["objective"]]
    assert {r["density"] == "" for r in rows} == {True, False}  # the case this test is about
    note = "not ranked (drawn by only some trials): density"
    assert titles["importance.png"] == note
    assert (tmp_path / "out" / "importance.png").stat().st_size > 1000
    assert [r.getMessage() for r in caplog.records if "not ranked" in r.getMessage()] == [
        f"importance.png: {note}"
    ]
    ranked = outputs.importances(outputs_study(tmp_path / "out"))
    assert set(ranked) == {"merge_method", "weight[task0]", "weight[task2]"}


def outputs_study(out):
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))
    )
    return optuna.load_study(study_name="hm3-search", storage=storage)


@pytest.mark.parametrize("block", ["search:\n", "search: {}\n", "search: null\n"])
def test_a_null_search_block_is_refused_as_an_empty_one(tmp_path, zoo_of, capsys, block):
    """`search:` with nothing after it searched the paper's space while `search: {}` was
    refused; both are an empty space now, refused in one line naming both ways out."""
    case = make_case(tmp_path / "case", zoo_of("bert"))
    case.config.write_text(case.config.read_text() + block, encoding="utf-8")
    message = expect_user_error(
        capsys, tmp_path, "search", case.config, "--suite", case.suite, "--out",
        tmp_path / "out", "--val-samples", "8", "--test-samples", "8", "--no-progress",
        match="search: is empty",
    )  # fmt: skip
    assert "name at least one parameter" in message
    assert "remove it to search the paper's density" in message


def test_search_png_plots_against_a_parameter_every_trial_drew(tmp_path, monkeypatch):
    """With nothing ranked, the x axis was the first parameter any trial drew: trials without it
    stood at a "None" category. It is now the first that every plotted trial drew."""
    import optuna
    from optuna.trial import create_trial

    study = optuna.create_study(direction="maximize")
    for value, drew in ((0.4, {"density": 0.3, "lambda": 1.1}), (0.5, {"lambda": 1.4})):
        study.add_trial(create_trial(value=value, user_attrs={"values": drew, "seed": 1}))
    seen = {}
    save = outputs._save

    def keep_axis(fig, path):
        seen[path.name] = (
            fig.axes[0].get_xlabel(),
            [t.get_text() for t in fig.axes[0].get_xticklabels()],
        )
        return save(fig, path)

    monkeypatch.setattr(outputs, "_save", keep_axis)
    assert outputs.write_plots(study, tmp_path, {}) == [tmp_path / "search.png"]
    label, ticks = seen["search.png"]
    assert label == "lambda" and "None" not in ticks
