"""--prune's paired rule: the search's own scores, and it stops only trials clearly behind."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hm3.evaluation.bootstrap import macro_f1
from hm3.evaluation.suite import Dataset
from hm3.model.labels import Task
from hm3.options import RunOptions
from hm3.search.data import SLICES, Bank, Labelled, Unlabelled, agreement_scores, f1_scores
from hm3.search.inputs import SearchSpec
from hm3.search.pruning import (
    ATTR,
    DRAWS,
    Pruner,
    chance_level,
    decisions,
    decode,
    disagreements,
    encode,
    macro_f1_batch,
    scores,
)
from hm3.search.run import search
from hm3.search.study import open_storage
from search_case import make_case, write_jsonl
from tiny import toy_texts

QUIET = RunOptions(progress=False)

TASKS = [Task("a", ("no", "yes"), 0, 2), Task("b", ("x", "y", "z"), 2, 5)]


def _dataset(name: str, texts: list[str], expected: dict[str, list[str]]) -> Dataset:
    return Dataset(name=name, path=Path(name), texts=tuple(texts),
                   expected={t: tuple(v) for t, v in expected.items()},
                   expect={t: "column label" for t in expected}, label_columns={},
                   row_ids=tuple(range(len(texts))), rows=len(texts))  # fmt: skip


def _sample(rng: np.random.Generator, n: int = 80) -> Labelled:
    """Three datasets: task a, task b, and one expecting both (a cross-check); one text shared."""
    specs = [("da", {"a": ("no", "yes")}), ("db", {"b": ("x", "y", "z")}),
             ("dab", {"a": ("no",), "b": ("x", "z")})]  # fmt: skip
    index: dict[str, int] = {}
    datasets, rows, stages = [], [], []
    for name, labels in specs:
        texts = [f"{name}-{i}" for i in range(n)]
        if name == "dab":
            texts[0] = "da-0"  # a text in two datasets is predicted once
        exp = {t: [str(rng.choice(v)) for _ in texts] for t, v in labels.items()}
        datasets.append(_dataset(name, texts, exp))
        rows.append(np.array([index.setdefault(t, len(index)) for t in texts]))
        stages.append((np.arange(n) * SLICES) // n)
    stage = np.full(len(index), SLICES - 1)
    for r, st in zip(rows, stages, strict=True):
        np.minimum.at(stage, r, st)
    return Labelled(datasets, Bank(list(index), stage, []), rows, stages)


def _logits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, 5)).astype(np.float32)


def test_macro_f1_batch_equals_macro_f1():
    rng = np.random.default_rng(0)
    conf = rng.integers(0, 6, size=(50, 3, 3))
    conf[0] = 0
    conf[1, 2, :] = conf[1, :, 2] = 0  # a label neither expected nor predicted
    np.testing.assert_allclose(macro_f1_batch(conf), [macro_f1(c) for c in conf], atol=1e-12)


def test_decisions_round_trip_through_a_user_attribute():
    rng = np.random.default_rng(1)
    dec = decisions(_logits(rng, 30), TASKS)
    assert dec.shape == (30, 2) and dec[:, 1].max() <= 2
    assert np.array_equal(decode(encode(dec), (30, 2)), dec)
    assert decode(encode(dec), (31, 2)) is None and decode(None, (30, 2)) is None
    wide = np.array([[300, 2], [0, 1]], dtype=np.int16)  # a task of more than 256 labels
    assert np.array_equal(decode(encode(wide), (2, 2)), wide)


@pytest.mark.parametrize("stage", range(SLICES))
def test_scores_on_the_rows_seen_equal_the_searchs_own(stage):
    rng = np.random.default_rng(stage)
    sample = _sample(rng)
    logits = _logits(rng, len(sample.bank.texts))
    pruner = Pruner(sample, TASKS, seed=0)
    got = scores(pruner.stage(stage), decisions(logits, TASKS))[0]
    assert got.shape == (DRAWS + 1,)
    assert got[0] == pytest.approx(f1_scores(sample, logits, TASKS, stage)[1], abs=1e-12)
    assert pruner.stage(stage).fraction == pytest.approx((stage + 1) / SLICES)
    assert got[1:].std() > 0  # the redraws move the score
    other = decisions(_logits(rng, len(sample.bank.texts)), TASKS)
    both = scores(pruner.stage(stage), decisions(logits, TASKS), other)
    assert np.array_equal(both[0], got)  # paired: the same redraws for every trial scored
    assert np.array_equal(both[1], scores(pruner.stage(stage), other)[0])


def test_agreement_scores_on_the_rows_seen_equal_the_searchs_own():
    rng = np.random.default_rng(3)
    n = 64
    sample = Unlabelled(Bank([str(i) for i in range(n)], (np.arange(n) * SLICES) // n, []),
                        _logits(rng, n))  # fmt: skip
    logits = sample.originals + rng.normal(scale=0.7, size=(n, 5)).astype(np.float32)
    for stage in range(SLICES):
        got = scores(Pruner(sample, TASKS, 0).stage(stage), decisions(logits, TASKS))[0]
        agree, _ = agreement_scores(sample, logits, TASKS, stage)
        assert got[0] == pytest.approx(np.mean(list(agree.values())), abs=1e-12)


def test_chance_level_widens_with_the_rows_left():
    draws = np.concatenate([[-0.02], np.linspace(-0.05, 0.03, 400)])
    early, late = chance_level(draws, 0.25), chance_level(draws, 0.75)
    assert 0 < late < early < 1
    assert chance_level(np.zeros(401), 0.25) == 1.0  # a tie is never stopped
    assert chance_level(draws, 1.0) == 0.0  # nothing left: the rows seen decide


def _study_with_best(sample: Labelled, dec: np.ndarray | None) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    attrs = {} if dec is None else {ATTR: encode(dec)}
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={"d": 0.3},
                                 distributions={"d": FloatDistribution(0, 1)},
                                 user_attrs=attrs))  # fmt: skip
    return study


def test_pruner_stops_a_trial_far_behind_and_keeps_one_close():
    rng = np.random.default_rng(5)
    sample = _sample(rng, n=200)
    n = len(sample.bank.texts)
    truth = np.zeros((n, 5), np.float32)  # the best trial: right on every row
    for data, rows in zip(sample.datasets, sample.rows, strict=True):
        for task in TASKS:
            if task.name in data.expected:
                picked = [task.labels.index(y) for y in data.expected[task.name]]
                truth[rows, task.start + np.array(picked)] = 1.0
    pruner = Pruner(sample, TASKS, seed=0)
    study = _study_with_best(sample, decisions(truth, TASKS))
    noise = _logits(rng, n)
    assert pruner.should_stop(study, noise, 0)  # random decisions: far behind after a slice
    close = truth.copy()
    seen = np.flatnonzero(sample.bank.stage == 0)
    close[seen[:4]] = noise[seen[:4]]  # a few texts wrong: too few to tell the two apart
    assert disagreements(pruner.stage(0), decisions(close, TASKS), decisions(truth, TASKS)) > 0
    assert not pruner.should_stop(study, close, 0)
    close[seen[:40]] = noise[seen[:40]]  # many: far behind
    assert pruner.should_stop(study, close, 0)
    assert not pruner.should_stop(study, truth, 2)
    # without the best's decisions (none stored, or another sample's) nothing is stopped
    assert not Pruner(sample, TASKS, 0).should_stop(_study_with_best(sample, None), noise, 0)
    other = decisions(truth[:-1], TASKS)
    assert not Pruner(sample, TASKS, 0).should_stop(_study_with_best(sample, other), noise, 0)
    assert not Pruner(sample, TASKS, 0).should_stop(optuna.create_study(), noise, 0)


def test_a_search_prunes_trials_far_behind_and_keeps_the_bests_decisions(
    tmp_path, zoo_factory, one_thread
):
    """A real search of trained tiny models whose weights span 1e-3…1: some trials stop early,
    only after a complete trial stored its decisions; every new best stores its own; the same
    seed prunes the same trials."""
    zoo = zoo_factory("bert", train_steps=40)  # trained: decisions that depend on the text
    case = make_case(tmp_path / "case", zoo,
                     search={"weight": {"log_uniform": [0.001, 1], "per_model": True}})  # fmt: skip
    write_jsonl(case.texts, [{"text": t} for t in toy_texts(160, seed=8)])
    spec = SearchSpec(config=case.config, suite=None, texts=case.texts, objective="agreement",
                      test_suite=case.suite, test_samples=16, trials=16, prune=True,
                      sampler="random")  # fmt: skip
    result = search(spec, tmp_path / "out", QUIET)
    study = optuna.load_study(study_name="hm3-search", storage=open_storage(None, tmp_path / "out"))
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 16 and result.pruned == sum(t.state == TrialState.PRUNED for t in trials)
    assert 0 < result.pruned < 16
    best = -1.0
    for t in trials:
        if t.state == TrialState.PRUNED:
            last = max(t.intermediate_values)
            assert last < SLICES - 1 and best > -1
            continue
        assert (ATTR in t.user_attrs) == (t.value > best)
        best = max(best, t.value)
    rows = (tmp_path / "out" / "trials.csv").read_text()
    assert ATTR not in rows.splitlines()[0]
    table = list(csv.DictReader(rows.splitlines()))
    assert sum(r["pruned"] == "True" for r in table) == result.pruned
    assert all(r["test_average"] == "" for r in table if r["pruned"] == "True")
    assert table[0]["test_average"] != ""  # the first trial is a new best: scored on test
    search(spec, tmp_path / "again", QUIET)
    assert _pruned(tmp_path / "again") == _pruned(tmp_path / "out")


def _pruned(out: Path) -> list[str]:
    return [
        r["number"] for r in csv.DictReader((out / "trials.csv").open()) if r["pruned"] == "True"
    ]
