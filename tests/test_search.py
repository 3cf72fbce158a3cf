"""hm3 search: one method code path with hm3 merge, aligned trials as hm3 align, outputs."""

from __future__ import annotations

import csv
import filecmp
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hm3.merging.config import MergeConfig
from hm3.model.classifier import load
from hm3.options import RunOptions
from hm3.recipe import merge
from hm3.search.engine import Engine
from hm3.search.inputs import SearchSpec
from hm3.search.run import search
from search_case import make_case
from tiny import toy_texts

QUIET = RunOptions(progress=False)


@pytest.fixture
def case(tmp_path, zoo_of):
    return make_case(tmp_path / "case", zoo_of("bert"))


def test_the_engine_warns_of_no_parameter_its_trials_draw(tmp_path, zoo_of, caplog):
    """A searched density makes the recipe's gamma count: no "changes nothing" warning from the
    recipe's own density of 1 (``hm3 merge`` of it still warns)."""
    zoo = zoo_of("bert")
    config = MergeConfig.from_dict({
        "base_model": str(zoo.base), "merge_method": "breadcrumbs",
        "models": [{"model": str(m)} for m in zoo.models[:2]], "parameters": {"gamma": 0.1},
    })  # fmt: skip
    Engine(config, QUIET)
    assert "changes nothing" not in caplog.text
    assert merge(config, tmp_path / "m", progress=False).warnings == config.idle_parameters()
    assert "gamma changes nothing" in caplog.text


@pytest.mark.parametrize("method", ["dare_ties", "ties", "tsv"])
def test_trial_tensors_equal_hm3_merge(tmp_path, case, method, one_thread):
    """The engine's live model holds exactly the tensors `hm3 merge` writes for the recipe."""
    data = yaml.safe_load(case.config.read_text())
    data.update(merge_method=method, seed=11)
    if method != "tsv":
        data["parameters"] = {"density": 0.4}
    config = MergeConfig.from_dict(data)
    engine = Engine(config, QUIET)
    engine.apply(config)
    merge(config, tmp_path / "merged", progress=False)
    written = load_file(tmp_path / "merged" / "model.safetensors")
    assert set(written) <= set(engine.params)
    for name, value in written.items():
        torch.testing.assert_close(engine.params[name].detach(), value, atol=1e-6, rtol=0)
    # a second trial with another seed moves the random methods' tensors; then back again
    engine.apply(config.model_copy(update={"seed": 12}))
    engine.apply(config)
    for name, value in written.items():
        torch.testing.assert_close(engine.params[name].detach(), value, atol=1e-6, rtol=0)


def test_unstaged_bank_batches_across_stages_and_scores_the_same(case, one_thread):
    """A bank no pruner reads is batched by length alone (less padding than one batched within
    each slice); run over every stage it gives the staged bank's logits."""
    import numpy as np

    from hm3.search.data import SLICES, Bank

    config = MergeConfig.from_dict(yaml.safe_load(case.config.read_text()))
    engine = Engine(config, QUIET)
    engine.apply(config)
    texts = toy_texts(40, seed=3)
    stage = (np.arange(len(texts)) * SLICES) // len(texts)
    staged = Bank.build(engine.clf, texts, stage, 4)
    plain = Bank.build(engine.clf, texts, stage, 4, staged=False)
    assert all(len(set(stage[idx])) == 1 for _, idx, _ in staged.batches)
    assert any(len(set(stage[idx])) > 1 for _, idx, _ in plain.batches)
    assert all(s == stage[idx].max() for s, idx, _ in plain.batches)

    def padded(bank: Bank) -> int:
        return sum(int(enc["input_ids"].numel()) for _, _, enc in bank.batches)

    assert padded(plain) <= padded(staged)
    width = engine.tasks[-1].end
    a, b = np.zeros((len(texts), width), np.float32), np.zeros((len(texts), width), np.float32)
    staged.run(engine.clf.model, a, range(SLICES))
    plain.run(engine.clf.model, b, range(SLICES))
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("per_task", [False, True], ids=["one-file", "file-per-task"])
def test_aligned_trial_gives_hm3_align_logits(tmp_path, case, one_thread, per_task):
    """A trial with `align:` (scaled body, ridge fit) predicts as `hm3 merge` + `hm3 align`,
    with one text file for every head or each task's own."""
    data = yaml.safe_load(case.config.read_text())
    data["parameters"] = {"density": 0.5}
    texts = str(case.texts)
    if per_task:  # task0's head on its suite file's texts, task2's on texts.jsonl
        texts = {"task0": str(case.config.parent / "task0.jsonl"), "task2": texts}
    data["align"] = {"texts": texts, "ridge": 0.1, "scale": 1.5}
    config = MergeConfig.from_dict(data)
    engine = Engine(config, QUIET)
    engine.prepare_alignment(config, config.align.texts)
    engine.apply(config)
    merge(config, tmp_path / "aligned", progress=False)
    texts = toy_texts(20, seed=5)
    ours = engine.clf.logits(texts)
    theirs = load(tmp_path / "aligned").logits(texts)
    assert abs(ours - theirs).max() < 1e-4
    unaligned = MergeConfig.from_dict({**data, "align": None})
    engine.apply(unaligned)  # the engine aligns only when the trial's config says so
    assert abs(engine.clf.logits(texts) - theirs).max() > 1e-3


def _run(case, out, **kw):
    spec = dict(config=case.config, suite=case.suite, trials=4, val_samples=16, test_samples=16)
    return search(SearchSpec(**{**spec, **kw}), out, QUIET)


def test_search_writes_outputs_and_best_rebuilds_byte_for_byte(tmp_path, zoo_of, one_thread):
    space = {
        "density": {"beta": [1.2, 2]},
        "weight": {"log_uniform": [0.5, 2], "per_model": True},
        "merge_method": ["dare_ties", "ties"],
    }
    case = make_case(tmp_path / "case", zoo_of("bert"), search=space)
    result = _run(case, tmp_path / "out", trials=5)
    out = tmp_path / "out"
    assert result.finished == 5 and result.wrote_best
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(5))
    for column in ("merge_method", "density", "weight[task0]", "weight[task2]", "val_task0",
                   "val_task2", "val_average", "test_average", "pruned", "seconds"):  # fmt: skip
        assert column in rows[0]
    assert rows[0]["test_average"]  # the first trial is always a new best
    assert (out / "search.png").stat().st_size > 1000
    assert (out / "importance.png").stat().st_size > 1000
    recipe = MergeConfig.from_yaml(out / "best" / "recipe.yaml")
    assert recipe.seed == result.best["seed"]
    merge(recipe, tmp_path / "again", progress=False)
    files = sorted(p.name for p in (tmp_path / "again").iterdir())
    assert files == sorted(p.name for p in (out / "best").iterdir() if p.name != "recipe.yaml")
    _, mismatch, errors = filecmp.cmpfiles(out / "best", tmp_path / "again", files,
                                               shallow=False)  # fmt: skip
    assert not mismatch and not errors


def test_an_aligned_best_rebuilds_byte_for_byte_whatever_the_batch_size(tmp_path, zoo_of,
                                                                         one_thread):  # fmt: skip
    """best/ is what `hm3 merge best/recipe.yaml` writes, with a text file per task and a
    --batch-size other than merge's (alignment pads by batch: its bits depend on it)."""
    texts = {"task0": "task0.jsonl", "task2": "texts.jsonl"}
    case = make_case(
        tmp_path / "case",
        zoo_of("bert"),
        align={"texts": texts, "ridge": 0.1},
        search={"density": {"beta": [1.2, 2]}, "scale": {"uniform": [0.5, 2]}},
    )
    spec = SearchSpec(config=case.config, suite=case.suite, trials=2, val_samples=16,
                      test_samples=16)  # fmt: skip
    result = search(spec, tmp_path / "out", QUIET.with_(batch_size=3))
    assert result.wrote_best
    recipe = MergeConfig.from_yaml(tmp_path / "out" / "best" / "recipe.yaml")
    assert set(recipe.align.texts) == {"task0", "task2"}
    merge(recipe, tmp_path / "again", progress=False)
    for name in ("model.safetensors", "config.json", "README.md"):
        assert filecmp.cmp(tmp_path / "out" / "best" / name, tmp_path / "again" / name,
                           shallow=False), name  # fmt: skip


def test_search_scores_in_the_dtype_asked_and_writes_the_recipes(tmp_path, case, one_thread):
    """--dtype bfloat16: the live model computes in bfloat16, the originals' reference stays
    float32, the same trials are drawn, and best/ is the recipe's float32 checkpoint."""
    config = MergeConfig.from_dict(yaml.safe_load(case.config.read_text()))
    fast = Engine(config, QUIET.with_(dtype="bfloat16"))
    fast.apply(config)
    assert {p.dtype for p in fast.clf.model.parameters()} == {torch.bfloat16}
    exact = Engine(config, QUIET)
    exact.apply(config)
    texts = toy_texts(12, seed=2)
    close = abs(fast.clf.logits(texts) - exact.clf.logits(texts)).max()
    assert 0 < close < 0.1
    a = _run(case, tmp_path / "a", trials=3)
    spec = SearchSpec(config=case.config, suite=case.suite, trials=3, val_samples=16,
                      test_samples=16)  # fmt: skip
    b = search(spec, tmp_path / "b", QUIET.with_(dtype="bfloat16"))
    assert b.originals == a.originals
    rows = [list(csv.DictReader((tmp_path / d / "trials.csv").open())) for d in "ab"]
    assert [r["density"] for r in rows[0]] == [r["density"] for r in rows[1]]
    recipe = MergeConfig.from_yaml(tmp_path / "b" / "best" / "recipe.yaml")
    merge(recipe, tmp_path / "again", progress=False)
    assert filecmp.cmp(tmp_path / "b" / "best" / "model.safetensors",
                       tmp_path / "again" / "model.safetensors", shallow=False)  # fmt: skip
    stored = load_file(tmp_path / "b" / "best" / "model.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float32}


def test_same_seed_same_trials(tmp_path, case, one_thread):
    a = _run(case, tmp_path / "a", trials=3, seed=4)
    b = _run(case, tmp_path / "b", trials=3, seed=4)
    c = _run(case, tmp_path / "c", trials=3, seed=5)
    rows = {k: list(csv.DictReader((tmp_path / k / "trials.csv").open())) for k in "abc"}
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows["a"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows["b"]]
    assert [r["density"] for r in rows["a"]] != [r["density"] for r in rows["c"]]
    assert a.best_values == b.best_values and a.best_values != c.best_values


def test_paper_sampler_draws_from_the_beta_prior(tmp_path):
    """`paper` draws density = Beta(1.2, 2)'s inverse CDF of a seeded uniform quantile."""
    import optuna
    from scipy.stats import beta, kstest

    from hm3.search.space import paper_space
    from hm3.search.study import make_sampler
    from hm3.search.trial import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler("paper", 0))
    draws = []
    for _ in range(400):
        trial = study.ask()
        draws.append(suggest(trial, paper_space(), "dare_ties", ["a", "b"])["density"])
        study.tell(trial, 0.0)
    assert kstest(draws, beta(1.2, 2).cdf).pvalue > 0.01
    assert min(draws) > 0 and max(draws) <= 1


def test_the_best_trial_scored_the_model_best_holds(tmp_path, zoo_factory, one_thread):
    """The scores a trial records are those of the model its recipe builds: `best/`, re-scored
    on the same texts, gives the best trial's similarity to the originals (mean 1 − TV of the
    probabilities, which any other merge of these trained models moves)."""
    import json
    from types import SimpleNamespace

    import numpy as np
    import optuna

    from hm3.alignment.originals import resolve_originals
    from hm3.model.features import load_originals, original_logits
    from hm3.search.data import agreement_scores
    from hm3.search.study import open_storage

    zoo = zoo_factory("bert", train_steps=40)  # trained: outputs that depend on the text
    case = make_case(tmp_path / "case", zoo, search={"density": {"uniform": [0.2, 0.9]}})
    spec = SearchSpec(config=case.config, suite=None, texts=case.texts, objective="agreement",
                      trials=4, sampler="random")  # fmt: skip
    search(spec, tmp_path / "out", QUIET)
    storage = open_storage(None, tmp_path / "out")
    trials = optuna.load_study(study_name="hm3-search", storage=storage).get_trials()
    best = max(trials, key=lambda t: t.value)
    recorded = best.user_attrs["similarity"]
    assert len({round(t.user_attrs["similarity"]["task0"], 6) for t in trials}) == 4
    texts = [json.loads(line)["text"] for line in case.texts.read_text().splitlines()]
    clf = load(tmp_path / "out" / "best")
    originals = resolve_originals(clf.tasks, None, clf.path)
    theirs = original_logits(clf.tasks, originals, load_originals(originals, QUIET), texts)
    sample = SimpleNamespace(bank=SimpleNamespace(stage=np.zeros(len(texts))),
                             originals=theirs.numpy())  # fmt: skip
    _, similar = agreement_scores(sample, clf.logits(texts), clf.tasks)
    assert similar == pytest.approx(recorded, abs=1e-5)


def test_label_free_objective_records_agreement_and_similarity(tmp_path, case, one_thread):
    result = _run(case, tmp_path / "lf", objective="agreement", texts=case.texts, suite=None,
                  test_suite=case.suite, trials=3)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "lf" / "trials.csv").open()))
    for column in ("agreement_task0", "agreement_average", "similarity_task2",
                   "similarity_average"):  # fmt: skip
        assert column in rows[0]
    assert all(0 <= float(r["agreement_average"]) <= 1 for r in rows)
    assert float(rows[0]["objective"]) == pytest.approx(float(rows[0]["agreement_average"]))
    assert result.best.get("test_average") is not None
    from hm3.cli.search import console, print_summary

    with console.capture() as shown:
        print_summary(result)
    text = " ".join(shown.get().split())  # the sentence may wrap
    table, _, line = text.partition("on --texts:")
    assert "validation" in table and "test" in table and "agreement" not in table
    agree, similar = result.best["agreement_average"], result.best["similarity_average"]
    assert f"agree with the originals' on {agree:.4f} of texts" in line
    assert f"(1 - total variation) {similar:.4f}" in line


def test_label_free_without_any_suite_prints_no_table_of_dashes(tmp_path, case, one_thread):
    result = _run(case, tmp_path / "lf", objective="agreement", texts=case.texts, suite=None,
                  trials=2)  # fmt: skip
    from hm3.cli.search import console, print_summary

    with console.capture() as shown:
        print_summary(result)
    lines = shown.get().splitlines()
    assert lines[0] == f"search: 2 trials, {result.pruned} pruned", lines
    assert "validation" not in shown.get() and "originals  " not in shown.get()  # no table
    assert lines[1].startswith(f"best merge (#{result.best_number}) on --texts: decisions agree")


def test_self_merge_scores_the_original_and_its_self_merges(tmp_path, case, one_thread):
    result = search(
        SearchSpec(
            self_model=str(case.models[0]),
            base=str(case.base),
            suite=case.suite,
            trials=3,
            val_samples=16,
            test_samples=16,
        ),
        tmp_path / "self",
        QUIET,
    )
    assert result.self_merge and result.finished == 3
    assert set(result.originals["val"]["tasks"]) == {case.models[0].name}
    recipe = yaml.safe_load((tmp_path / "self" / "best" / "recipe.yaml").read_text())
    assert [m["model"] for m in recipe["models"]] == [str(case.models[0].resolve())] * 2


def test_self_task_names_the_model_as_the_suite_does(tmp_path, case, capsys, one_thread):
    """A model's directory need not be named as its task: ``--self TASK=DIR`` names it."""
    import shutil

    from hm3.cli.app import main
    from search_case import fails

    model = shutil.copytree(case.models[0], tmp_path / "task0-finetuned-v3")
    argv = ["search", "--base", str(case.base), "--suite", str(case.suite), "--trials", "1",
            "--val-samples", "8", "--test-samples", "8", "--no-progress"]  # fmt: skip
    line = fails(capsys, [*argv, "--self", str(model), "--out", str(tmp_path / "a")],
                 "no dataset expects a label for task 'task0-finetuned-v3'",
                 "--self TASK=MODEL")  # fmt: skip
    assert not (tmp_path / "a").exists(), line
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--self", f"task0={model}", "--out", str(tmp_path / "b")])
    assert exc.value.code in (0, None)
    recipe = yaml.safe_load((tmp_path / "b" / "best" / "recipe.yaml").read_text())
    assert [m["name"] for m in recipe["models"]] == ["task0", "task0_copy"]
    assert {m["model"] for m in recipe["models"]} == {str(model.resolve())}
    odd = shutil.copytree(case.models[0], tmp_path / "task0=v3")  # an '=' in an existing path
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--self", f"task0={odd}", "--out", str(tmp_path / "c")])
    assert exc.value.code in (0, None), capsys.readouterr().err


def test_timeout_counts_from_the_command_start(tmp_path, case, one_thread):
    """A start-up longer than --timeout leaves no time for a trial: nothing is written as best,
    and the summary says so instead of failing."""
    import time

    from hm3.search.run import _loop

    result = _run(case, tmp_path / "out", trials=50, timeout=1e-3)
    assert result.finished == 0 and not result.wrote_best and result.best_number is None
    assert not (tmp_path / "out" / "best").exists()
    # the deadline is the start plus the timeout, not the loop's own start
    import optuna

    study = optuna.create_study(direction="maximize")
    spec = SearchSpec(config=case.config, suite=case.suite, trials=5, timeout=60.0)
    mine, timed_out = _loop(study, None, spec, tmp_path, QUIET, time.perf_counter() - 61)
    assert mine == set() and timed_out and study.trials == []


def test_a_resume_stopped_by_its_timeout_before_a_trial_writes_the_best(tmp_path, case,
                                                                         one_thread):  # fmt: skip
    """A killed search leaves no best/; its resume writes it even when --timeout leaves no time
    for a trial of its own."""
    out = tmp_path / "out"
    first = _run(case, out, trials=2)
    shutil.rmtree(out / "best")  # as a SIGKILL before the end leaves it
    again = _run(case, out, trials=50, timeout=1e-3, resume=True)
    assert again.finished == 2 and again.wrote_best and again.best_number == first.best_number
    assert (out / "best" / "recipe.yaml").is_file()


def test_cli_summary_names_each_models_parameters(tmp_path, zoo_of, capsys, one_thread):
    """Per-model parameters print as `weight[task]` (not eaten as console markup)."""
    from hm3.cli.app import main

    space = {"weight": {"log_uniform": [0.5, 2], "per_model": True}}
    case = make_case(tmp_path / "case", zoo_of("bert"), search=space)
    argv = ["search", str(case.config), "--suite", str(case.suite), "--out", str(tmp_path / "o"),
            "--trials", "2", "--val-samples", "8", "--no-progress"]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)
    out, err = capsys.readouterr()
    names = [t["name"] for t in yaml.safe_load(case.config.read_text())["models"]]
    for name in names:
        assert f"weight[{name}]=" in out, out
    assert "trials done" not in err, err


@pytest.mark.parametrize("terminal", [False, True])
def test_off_a_terminal_each_trial_is_a_log_line(tmp_path, case, capsys, monkeypatch, terminal):
    """Where no bar can be drawn (a log, nohup, CI), each trial says how it ended and the best."""
    from hm3.cli.app import main

    for name in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    if terminal:
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("TTY_INTERACTIVE", "1")
    argv = ["search", str(case.config), "--suite", str(case.suite), "--out", str(tmp_path / "o"),
            "--trials", "2", "--val-samples", "8"]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("trial ")]
    if terminal:
        assert lines == [] and "searching" in err, err
        return
    expected, best = [], None
    for i, row in enumerate(csv.DictReader((tmp_path / "o" / "trials.csv").open())):
        value = float(row["objective"])
        if best is None or value > best[0]:  # ties: the earlier trial stays the best
            best = (value, f"{value:.4f} (#{row['number']}), test {float(row['test_average']):.4f}")
        expected.append(f"trial {row['number']} scored {value:.4f}; best {best[1]}; "
                        f"{i + 1} of 2 trials done")  # fmt: skip
    assert lines == expected, err
    assert "" not in err.splitlines() and "━" not in err, err


def test_trial_lines_say_how_each_trial_ended():
    import optuna
    from optuna.trial import TrialState, create_trial

    from hm3.search.outputs import trial_line

    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(value=0.6, user_attrs={"test_average": 0.5}))
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={0: 0.4, 1: 0.3}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"invalid": "lambda"}))
    best = "best 0.6000 (#0), test 0.5000"
    assert trial_line(study, 0, 1, 5) == f"trial 0 scored 0.6000; {best}; 1 of 5 trials done"
    assert trial_line(study, 1, 2, 5) == (
        f"trial 1 pruned after 2/8 of its rows; {best}; 2 of 5 trials done"
    )
    assert trial_line(study, 2, 2, 5) is None  # a skipped draw warns on its own
    assert trial_line(study, 3, 2, 5) is None


def test_importances_are_fanova_and_repeatable():
    """The plot's axis says fANOVA: the numbers are fANOVA's (seeded: the same every time)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    from hm3.search.outputs import importances

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(1))
    study.optimize(lambda t: 3 * t.suggest_float("a", 0, 1) + 0.1 * t.suggest_float("b", 0, 1),
                   n_trials=20)  # fmt: skip
    got = importances(study)
    want = optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=0)
    )
    assert got == pytest.approx(dict(want)) and got == importances(study)
    assert got["a"] > got["b"]
