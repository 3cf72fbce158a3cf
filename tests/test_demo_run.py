"""``hm3 demo --quick`` end to end: real sources, real fine-tuning, merges, alignment, report.

The session's ``HM3_CACHE`` starts empty (only the pinned downloads are fetched once for the
session), so the first run prepares the data and fine-tunes the zoo from scratch; the second
run reuses the zoo. This is the README's run command on CI-sized data.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from hm3.cli.app import main
from hm3.demo.cases import CASES, METHODS, SEARCH_TRIALS
from hm3.demo.data.spec import QUICK

pytestmark = pytest.mark.slow


def _run(capsys, *args):
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


@pytest.fixture(scope="module")
def first_run(demo_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    with pytest.raises(SystemExit) as done:
        main(["demo", "--quick", "--out", str(out), "--cache", str(demo_cache), "--no-progress"])
    assert (done.value.code or 0) == 0
    return out


def test_report_holds_table1_every_case_and_the_plots(first_run):
    report = (first_run / "report.md").read_text()
    assert "## Table 1: average macro-F1" in report
    summary = json.loads((first_run / "summary.json").read_text())
    columns = ["original"] + [f"{m.name}{s}" for m in METHODS for s in ("", "+align")]
    assert [c["name"] for c in summary["cases"]] == [c.name for c in CASES]
    for case in summary["cases"]:
        assert set(case["average_f1"]) == set(columns)
        assert all(0 <= v <= 1 for v in case["average_f1"].values())
        assert f"]({case['name']}/report.md)" in report
        assert all(set(case["per_task"][c]) == set(case["tasks"]) for c in columns)
        case_report = first_run / case["name"]
        assert (case_report / "results.json").is_file()
        pngs = list(case_report.glob("*.png"))
        assert any(p.name.startswith("confusion_") for p in pngs)
        assert any(p.name.startswith("accuracy_") for p in pngs)
        assert len([p for p in pngs if p.name.startswith("original_vs_")]) == len(columns) - 1
    assert [o["task"] for o in summary["originals"]] == [
        "prompt_attack",
        "toxicity",
        "spam",
        "sentiment",
    ]
    assert all(not o["reused"] for o in summary["originals"])  # a clean cache: trained here
    assert not (first_run / "models").exists()  # merged models are scratch unless kept
    # where the models and data are, for a user's own configs: real directories, all of them
    tried = report.split("## Try hm3 on these models")[1]
    listed = [Path(p) for p in re.findall(r"`(/[^`]+)`", tried)]
    assert [p.name for p in listed[1:5]] == [Path(o["path"]).name for o in summary["originals"]]
    assert all((p / "config.json").is_file() for p in listed[:5])  # the base, the originals
    assert (listed[5] / "suite.yaml").is_file() and (listed[5] / "unlabeled.jsonl").is_file()
    assert summary["base_model"] == str(listed[0])
    assert not list(first_run.parent.glob(".report*"))


def test_second_run_reuses_the_zoo_and_keeps_models_on_request(first_run, demo_cache, capsys):
    out = first_run.parent / "again"
    args = ["demo", "--quick", "--out", out, "--cache", demo_cache, "--progress"]
    code, stdout, err = _run(capsys, *args, "--keep-models")
    assert code == 0, err
    assert "Table 1" in stdout and "→" in stdout
    # progress on, written to a pipe: the step lines only, no bar, no empty line, no search trials
    steps = err.splitlines()
    assert "· case1: merging prompt_attack + toxicity" in steps, err
    assert not [line for line in steps if not line.strip() or line.startswith("trial ")], err
    assert "━" not in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert all(o["reused"] for o in summary["originals"])
    assert summary["cases"] == json.loads((first_run / "summary.json").read_text())["cases"]
    case1 = out / "models" / "case1"
    tasks = json.loads((case1 / "ties" / "config.json").read_text())["hm3"]["tasks"]
    assert [t["name"] for t in tasks] == ["prompt_attack", "toxicity"]
    # the aligned twins, written by `hm3 align` on the case's own tasks' unlabeled texts
    texts = (case1 / "unlabeled.jsonl").read_text().splitlines()
    aligned = json.loads((case1 / "ties+align" / "config.json").read_text())["hm3"]["align"]
    assert aligned["n_texts"] == len(texts) == 2 * QUICK.unlabeled
    # the searched column: the best of SEARCH_TRIALS trials, a normal checkpoint whose recipe is
    # a plain DARE-TIES merge with the density the search chose (on the validation suite)
    recipe = yaml.safe_load((case1 / "dare_ties_search" / "recipe.yaml").read_text())
    assert recipe["merge_method"] == "dare_ties" and 0 < recipe["parameters"]["density"] <= 1
    with open(case1 / "dare_ties_search-search" / "run" / "trials.csv") as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == SEARCH_TRIALS
    chosen = recipe["parameters"]["density"]
    assert any(abs(chosen - float(t["density"])) < 1e-3 for t in trials)  # the CSV rounds
    suite = yaml.safe_load(
        (case1 / "dare_ties_search-search" / "inputs" / "val_suite.yaml").read_text()
    )
    assert all(d["path"].startswith("val/") for d in suite["datasets"])  # not the test rows
    # a benign control of its own, as suite.yaml has, with none of the test control's texts
    control = next(d for d in suite["datasets"] if d["name"] == "benign_control")
    assert control["expect"] == {"prompt_attack": "benign", "toxicity": "non_toxic"}
    inputs = case1 / "dare_ties_search-search" / "inputs"
    val_control = set((inputs / control["path"]).read_text().splitlines())
    (test_control,) = demo_cache.glob("data/v*/seed0-quick/benign_control.jsonl")
    assert 0 < len(val_control) <= QUICK.validation
    assert not val_control & set(test_control.read_text().splitlines())
    plain = [*args[:3], first_run.parent / "plain", *args[4:], "--no-align"]
    code, stdout, err = _run(capsys, *plain, "--methods", "soup,regmean,tsv")
    assert code == 0, err
    assert "Table 1" in stdout and "regmean" in stdout and "tsv" in stdout and "→" not in stdout
    summary = json.loads((first_run.parent / "plain" / "summary.json").read_text())
    assert summary["methods"] == ["soup", "regmean", "tsv"]
    columns = {"original", "soup", "regmean", "tsv"}
    assert all(set(c["average_f1"]) == columns for c in summary["cases"])


def test_existing_report_is_refused_and_left_alone(first_run, demo_cache, capsys):
    before = (first_run / "report.md").read_text()
    code, _, err = _run(capsys, "demo", "--quick", "--out", first_run, "--cache", demo_cache)
    assert code == 2
    assert "already exists" in err and "--force" in err
    assert (first_run / "report.md").read_text() == before
