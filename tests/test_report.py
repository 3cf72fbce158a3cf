"""``hm3.evaluation.report``: the report directory, its markdown, its PNGs, the terminal tables."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from hm3.errors import Hm3Error
from hm3.evaluation.report import print_tables, tables, write_report
from hm3.evaluation.results import EvaluationResult
from hm3.evaluation.run import evaluate
from hm3.evaluation.suite import load_suite
from test_evaluation import _one_thread, build_suite  # noqa: F401  (autouse fixture)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result(zoo_factory, tmp_path_factory) -> EvaluationResult:
    """test_evaluate's suite on conftest's (untrained) zoo: originals and two single models."""
    zoo = zoo_factory("bert")
    suite = load_suite(build_suite(tmp_path_factory.mktemp("suite")))
    originals = {f"task{i}": path for i, path in enumerate(zoo.models)}
    models = {"single0": zoo.models[0], "single2": zoo.models[2]}
    return evaluate(suite, models, originals=originals, progress=False)


def test_report_dir_has_results_markdown_and_every_referenced_png(result, tmp_path):
    out = write_report(result, tmp_path / "report")
    files = {p.name for p in out.iterdir()}
    assert {"results.json", "report.md"} <= files
    assert EvaluationResult.from_json((out / "results.json").read_text()) == result
    md = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    pngs = {f for f in files if f.endswith(".png")}
    assert set(linked) == pngs  # every PNG is in the report, every image link resolves
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG
    want = {f"{kind}_task{i}.png" for kind in ("accuracy", "confusion") for i in range(3)}
    assert want | {"original_vs_single0.png", "original_vs_single2.png"} == pngs
    headings = (
        "Average macro-F1",
        "Macro-F1 per task",
        "Accuracy per dataset",
        "Agreement",
        "Metrics",
    )
    for heading in headings:
        assert f"## {heading}" in md
    assert "| original | task0, task1, task2 |" in md
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_existing_report_needs_force(result, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(Hm3Error, match="pass force=True"):
        write_report(result, out)
    write_report(result, out, force=True)
    assert not (out / "old.txt").exists() and (out / "report.md").is_file()


def test_tables_put_models_side_by_side(result):
    found = tables(result)
    (avg_title, avg_head, avg), (_, task_head, per_task), (_, data_head, per_data) = found[:3]
    assert avg_head == ["model", "tasks", "average F1"]
    assert [row[0] for row in avg] == ["original", "single0", "single2"]
    assert avg[1][2] == f"{result.model('single0').average_f1:.3f}"
    assert task_head == ["task", "original", "single0", "single2"]
    assert per_task[1] == ["task1", f"{result.model('original').task('task1').f1:.3f}", "—", "—"]
    assert data_head[:4] == ["dataset", "task", "expected", "n"]
    rows = {(r[0], r[1]): r for r in per_data}
    assert rows[("g2", "task0")][2:5] == ["benign", "24", rows[("g2", "task0")][4]]
    assert rows[("mixed", "task2")][2] == "column letter"
    assert len(per_data) == sum(len(d.expect) for d in result.datasets)
    agree_title, agree_head, agree = found[3]  # each model is its own task's original
    assert agree_head == ["task", "single0", "single2"]
    assert agree == [
        ["task0", "1.000 (+0 −0)", "—"],
        ["task1", "—", "—"],
        ["task2", "—", "1.000 (+0 −0)"],
    ]
    buffer = io.StringIO()
    print_tables(result, Console(file=buffer, width=160))
    text = buffer.getvalue()
    assert avg_title in text and "single2" in text and "column letter" in text
    assert agree_title in text
    alone = result.model_copy(update={"models": result.models[:1]})  # the originals only
    assert len(tables(alone)) == 3


def test_results_json_is_plain_json(result, tmp_path):
    out = write_report(result, tmp_path / "r")
    data = json.loads((out / "results.json").read_text())
    task = data["models"][0]["tasks"][0]
    assert set(task) == {"task", "f1", "support", "labels", "confusion", "datasets", "agreement"}
    assert len(task["confusion"]) == len(task["labels"])
