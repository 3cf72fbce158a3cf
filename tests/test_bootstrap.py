"""``hm3.evaluation.bootstrap``: the paired bootstrap of average F1 against the originals.

Checked against scikit-learn and against a direct, independent bootstrap (sklearn's
``f1_score`` on explicitly resampled rows), plus the properties that make it a paired test:
a copy of the originals differs by exactly 0 in every redraw, a model that only fixes the
originals' mistakes is never below them, two identical models get identical intervals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hm3.evaluation.bootstrap import compare_with_originals, macro_f1, redraws
from hm3.evaluation.scoring import ORIGINAL
from hm3.evaluation.suite import Dataset

LABELS = {"t": ("a", "b", "c"), "u": ("yes", "no")}


def dataset(name: str, expected: dict[str, list[str]]) -> Dataset:
    n = len(next(iter(expected.values())))
    texts = tuple(f"{name}-{i}" for i in range(n))
    expect = {task: "column label" for task in expected}
    exp = {task: tuple(v) for task, v in expected.items()}
    return Dataset(name, Path(name), texts, exp, expect, {}, tuple(range(n)), n)


def suite(seed: int = 0) -> tuple[list[Dataset], dict]:
    """Three datasets; ``d2`` is scored by both tasks (a cross-check); noisy predictions."""
    rng = np.random.default_rng(seed)

    def draw(task: str, n: int) -> list[str]:
        return list(np.asarray(LABELS[task], object)[rng.integers(0, len(LABELS[task]), n)])

    datasets = [
        dataset("d0", {"t": draw("t", 40)}),
        dataset("d1", {"u": draw("u", 30)}),
        dataset("d2", {"t": draw("t", 25), "u": draw("u", 25)}),
    ]
    preds = {}
    for column in (ORIGINAL, "m1", "m2"):
        for d in datasets:
            for task, truth in d.expected.items():
                keep = rng.random(len(truth)) < 0.6  # right on about 60 % + chance
                guess = draw(task, len(truth))
                preds[column, task, d.name] = np.where(keep, np.asarray(truth, object), guess)
    return datasets, preds


def test_macro_f1_equals_sklearn():
    rng = np.random.default_rng(1)
    for trial in range(200):
        k = int(rng.integers(1, 5))
        n = int(rng.integers(1, 40))
        y_true = rng.integers(0, k, n)
        y_pred = rng.integers(0, k + int(trial % 3 == 0), n)  # sometimes a label never expected
        m = k + 1
        confusion = np.bincount(y_true * m + y_pred, minlength=m * m).reshape(m, m)
        want = f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert macro_f1(confusion) == pytest.approx(want, abs=1e-12)


def test_interval_equals_a_direct_bootstrap_with_sklearn():
    datasets, preds = suite()
    got = compare_with_originals(preds, datasets, ["m1"], draws=150, seed=7)["m1"]

    def average(column: str, rows: dict[str, np.ndarray] | None) -> float:
        f1s = []
        for task in ("t", "u"):
            used = [d for d in datasets if task in d.expected]
            pick = {d.name: rows[d.name] if rows else np.arange(len(d.texts)) for d in used}
            truth = np.concatenate(
                [np.asarray(d.expected[task], object)[pick[d.name]] for d in used]
            )
            said = np.concatenate([preds[column, task, d.name][pick[d.name]] for d in used])
            f1s.append(f1_score(truth, said, average="macro", zero_division=0))
        return float(np.mean(f1s))

    rng = np.random.default_rng(7)  # the documented scheme, written out here independently
    rows = [
        {d.name: rng.integers(0, len(d.texts), len(d.texts)) for d in datasets} for _ in "x" * 150
    ]
    diffs = [average("m1", r) - average(ORIGINAL, r) for r in rows]
    assert got.tasks == ("t", "u") and got.draws == 150 and got.seed == 7
    assert got.difference == pytest.approx(average("m1", None) - average(ORIGINAL, None), abs=1e-12)
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert (got.low, got.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert got.above == pytest.approx(np.mean(np.array(diffs) > 0))
    assert got.low < got.difference < got.high  # noisy models: a real interval around it


def test_a_copy_of_the_originals_differs_by_zero_in_every_redraw():
    datasets, preds = suite()
    for d in datasets:
        for task in d.expected:
            preds["copy", task, d.name] = preds[ORIGINAL, task, d.name].copy()
    got = compare_with_originals(preds, datasets, ["copy"], draws=100, seed=0)["copy"]
    assert (got.difference, got.low, got.high, got.above) == (0.0, 0.0, 0.0, 0.0)


def test_fixing_only_the_originals_mistakes_is_never_below_them():
    """Turning a wrong label into the right one never lowers any label's F1, in any redraw."""
    datasets, preds = suite()
    rng = np.random.default_rng(3)
    for d in datasets:
        for task, truth in d.expected.items():
            theirs = preds[ORIGINAL, task, d.name]
            fix = (theirs != np.asarray(truth, object)) & (rng.random(len(truth)) < 0.5)
            preds["better", task, d.name] = np.where(fix, np.asarray(truth, object), theirs)
    got = compare_with_originals(preds, datasets, ["better"], draws=300, seed=0)["better"]
    assert got.difference > 0 and got.low >= 0 and got.above > 0.95


def test_seeded_and_paired():
    datasets, preds = suite()
    for d in datasets:
        for task in d.expected:
            preds["m1-again", task, d.name] = preds["m1", task, d.name]
    first = compare_with_originals(preds, datasets, ["m1", "m1-again", "m2"], draws=80, seed=1)
    again = compare_with_originals(preds, datasets, ["m1", "m1-again", "m2"], draws=80, seed=1)
    other = compare_with_originals(preds, datasets, ["m1"], draws=80, seed=2)
    assert first == again
    assert first["m1"] == first["m1-again"]  # the same redraws for every column
    assert (other["m1"].low, other["m1"].high) != (first["m1"].low, first["m1"].high)
    assert other["m1"].difference == first["m1"].difference  # the suite's own score: no redraw


def test_only_the_tasks_both_answer_are_compared():
    datasets, preds = suite()
    only_t = {k: v for k, v in preds.items() if not (k[0] == "m1" and k[1] == "u")}
    got = compare_with_originals(only_t, datasets, ["m1", ORIGINAL], draws=20, seed=0)
    assert set(got) == {"m1"} and got["m1"].tasks == ("t",)  # the originals are not compared
    alone = compare_with_originals(preds, datasets, ["m1"], draws=20, seed=0)["m1"]
    assert got["m1"].difference != alone.difference  # over task t only, not t and u
    no_shared = {k: v for k, v in preds.items() if k[0] != "m2"}
    no_shared |= {("m2", "v", "d0"): np.array(["x"] * 40, object)}  # a task no dataset expects
    assert "m2" not in compare_with_originals(no_shared, datasets, ["m2"], draws=5, seed=0)
    with pytest.raises(ValueError, match="draws must be >= 1"):
        compare_with_originals(preds, datasets, ["m1"], draws=0, seed=0)


def test_redraws_cover_every_row_and_repeat_on_every_call():
    datasets, _ = suite()
    first = list(redraws(datasets, 400, seed=5))
    assert len(first) == 400 and [list(d) for d in first[:1]] == [["d0", "d1", "d2"]]
    for d in datasets:
        picked = np.concatenate([draw[d.name] for draw in first])
        assert all(len(draw[d.name]) == len(d.texts) for draw in first)  # n rows out of n
        assert set(picked.tolist()) == set(range(len(d.texts)))  # every row, none beyond
    again = list(redraws(datasets, 400, seed=5))
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again, strict=True) for k in a)
