"""hm3 search: a space is refused up front when its ends cannot merge or it searches nothing;
a trial whose values cannot merge is skipped without stopping the search."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from hm3.search.feasible import check_extremes
from hm3.search.space import SearchSpace, check_space, paper_space
from search_case import fails as _fails
from search_case import make_case


def _check(space: SearchSpace, config: MergeConfig, declared: bool) -> None:
    """What `hm3 search` checks of a space before any trial (as `inputs.read_recipe` does)."""
    check_space(space, config, "m.yaml", declared)
    check_extremes(space, config, "m.yaml", declared)


def _argv(case, out, *extra):
    return ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
            "--val-samples", "8", "--test-samples", "8", "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "space", "needles"),
    [
        # the reviewer's: trials ran, then epsilon 0.296 (never written by the user) stopped it
        ("della", {"density": {"uniform": [0.1, 0.9]}, "epsilon": {"uniform": [0.05, 0.5]}},
         ["search.density Uniform(0.1, 0.9)", "search.epsilon Uniform(0.05, 0.5)",
          "density 0.1 − epsilon 0.5 ≤ 0", "epsilon below 0.1"]),
        ("della", {"density": {"uniform": [0.2, 1]}},
         ["search.density Uniform(0.2, 1)", "epsilon 0.15 (default)", "near 1",
          "density inside (0.15, 0.85)"]),
        ("della", None, ["Beta(1.2, 2) (the default search space)", "search: block"]),
        ("linear", {"weight": {"choices": [-1, 1], "per_model": True}},
         ["search.weight one of -1, 1 per model", "sum to zero", "normalize: false"]),
        ("tsv", {"weight": {"uniform": [-1, 1]}}, ["search.weight Uniform(-1, 1)", "> 0"]),
        ("ties", {"weight": [0, 1]}, ["search.weight one of 0, 1", "0 at once"]),
    ],
)  # fmt: skip
def test_ends_that_cannot_merge_are_refused_before_any_trial(
    tmp_path, zoo_of, capsys, method, space, needles
):
    case = make_case(tmp_path / "case", zoo_of("bert"), search=space, merge_method=method)
    out = tmp_path / "out"
    _fails(capsys, _argv(case, out), *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    ("method", "space", "needles", "absent"),
    [
        ("linear", None, ["merge_method linear: the default search space is DARE-TIES's density",
                          "add a search: block", "weight: {log_uniform"], "search.density"),
        ("tsv", None, ["tsv does not use"], "search.density"),
        ("dare_ties", {}, ["search: is empty", "remove it to search the paper's density"],
         "no density"),
        ("dare_ties", {"merge_method": "tsv"}, ["nothing to search",
                                                "merge_method: tsv has one value"], "dare_ties"),
        ("dare_ties", {"merge_method": ["ties", "ties"]},
         ["search.merge_method: ties is listed twice"], None),
        ("dare_ties", {"density": [0.5, 0.5]}, ["search.density: 0.5 is listed twice"], None),
        ("dare_ties", {"density": [0.5]}, ["nothing to search", "density: [0.5] has one value"],
         None),
    ],
)  # fmt: skip
def test_a_space_that_searches_nothing_says_so_truly(
    tmp_path, zoo_of, capsys, method, space, needles, absent
):
    case = make_case(tmp_path / "case", zoo_of("bert"), search=space, merge_method=method)
    out = tmp_path / "out"
    line = _fails(capsys, _argv(case, out), *needles)
    assert absent is None or absent not in line, line
    assert not out.exists()


def _config(method="linear", n=2, **parameters):
    models = [{"model": f"m{i}", "name": f"t{i}"} for i in range(n)]
    doc = {"base_model": "base", "merge_method": method, "models": models}
    return MergeConfig.from_dict({**doc, "parameters": parameters} if parameters else doc)


@pytest.mark.parametrize(
    ("space", "config"),
    [
        ({"density": {"uniform": [0.2, 0.8]}, "epsilon": {"uniform": [0.05, 0.15]}},
         _config("della")),
        ({"density": [0.5, 1.0]}, _config("della", epsilon=0.4)),  # density 1 prunes nothing
        ({"weight": {"choices": [-1, 1], "per_model": True}}, _config(n=3)),  # odd sums only
        ({"weight": [-1, 1]}, _config()),  # one weight for all: n · w is never 0
        ({"weight": {"choices": [-1, 1], "per_model": True}}, _config(normalize=False)),
        ({"weight": {"uniform": [-1, 1], "per_model": True}}, _config("task_arithmetic")),
    ],
)  # fmt: skip
def test_ends_that_merge_are_accepted(space, config):
    _check(SearchSpace.model_validate(space), config, True)


@pytest.mark.parametrize(
    ("space", "config", "needle"),
    [
        ({"density": [0.5, 1.0], "epsilon": {"uniform": [0.1, 0.5]}}, _config("della"),
         "density 0.5 − epsilon 0.5 ≤ 0"),
        ({"weight": {"choices": [-1, 1], "per_model": True}}, _config(n=4), "sum to zero"),
        ({"weight": {"uniform": [-1, 1], "per_model": True}},
         _config("task_arithmetic", normalize=True), "sum to zero"),
        ({"merge_method": ["dare_ties", "linear"], "weight": {"uniform": [-1, 1],
                                                               "per_model": True}},
         _config("dare_ties"), "merge_method linear divides by their sum"),
    ],
)  # fmt: skip
def test_ends_that_cannot_merge_name_the_method_and_keys(space, config, needle):
    with pytest.raises(Hm3Error, match=r"^m\.yaml: ") as exc:
        _check(SearchSpace.model_validate(space), config, True)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("space", "config", "warned"),
    [
        ({"weight": [0.5, 2]}, _config("dare_ties"), "dare_ties with density 1"),
        ({"merge_method": ["ties", "della"], "weight": [0.5, 2]}, _config("ties"),
         "della with density 1"),
        ({"weight": [0.5, 2]}, _config("dare_ties", density=0.5), None),
        ({"density": [0.3, 0.6]}, _config("dare_ties"), None),
        (None, _config("dare_ties"), None),  # the paper's space searches density
        ({"weight": [0.5, 2]}, _config("ties"), None),  # TIES keeps the largest: not random
    ],
)  # fmt: skip
def test_dare_without_density_warns_that_it_drops_nothing(caplog, space, config, warned):
    parsed = paper_space() if space is None else SearchSpace.model_validate(space)
    with caplog.at_level(logging.WARNING, logger="hm3"):
        _check(parsed, config, space is not None)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if warned is None:
        assert lines == []
    else:
        assert len(lines) == 1 and warned in lines[0] and "drops nothing" in lines[0], lines
        assert "add density to search: or parameters:" in lines[0]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def optuna_lines():
    """What Optuna logs (its own logger does not propagate to pytest's)."""
    handler = _Records()
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def _trials(out):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="hm3-search", storage=storage).trials


def _search_lambdas(tmp_path, zoo_of, capfd, lambdas: list[float]) -> tuple[object, str, Path]:
    """A 3-trial dare_ties search over ``lambda: lambdas``: exit code, stderr, --out."""
    case = make_case(tmp_path / "case", zoo_of("bert"), search={"lambda": lambdas})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(_argv(case, out, "--trials", "3"))
    return exc.value.code, capfd.readouterr().err, out


def test_a_trial_that_cannot_merge_is_skipped_and_not_counted(
    tmp_path, zoo_of, capfd, optuna_lines, one_thread
):
    # lambda 1e39 overflows float32: decided only at the drawn point, so the trial is skipped
    code, err, out = _search_lambdas(tmp_path, zoo_of, capfd, [1, 1e39])
    err = " ".join(err.split())  # the log handler wraps long lines
    assert code in (0, None), err
    trials = _trials(out)
    skipped = [t for t in trials if t.state.name == "FAIL"]
    assert skipped and all("NaN or Inf" in t.user_attrs["invalid"] for t in skipped)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["lambda"] for r in rows] == ["1"] * 3
    assert f"trial {skipped[0].number} (merge_method=dare_ties, lambda=1e+39) skipped" in err
    assert err.count("skipped, not counted") == len(skipped), err
    assert "Traceback" not in err and not [m for m in optuna_lines if "failed" in m]
    assert "dare_ties with density 1 (neither searched nor set)" in err


def test_ten_trials_in_a_row_that_cannot_merge_stop_the_search(
    tmp_path, zoo_of, capfd, optuna_lines, one_thread
):
    code, err, out = _search_lambdas(tmp_path, zoo_of, capfd, [1e39, 2e39])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert lines[-1].startswith("error: 10 trials in a row drew values that cannot merge"), err
    assert "narrow the search: ranges" in lines[-1] and "Traceback" not in err
    trials = _trials(out)
    assert len(trials) == 10 and all(t.state.name == "FAIL" for t in trials)
    assert not [m for m in optuna_lines if "failed" in m], optuna_lines
