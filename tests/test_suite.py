"""Suite files and dataset reading: formats, per-row labels, the seeded limit, bad input.

No model runs here; checks against models' tasks are in test_evaluate.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hm3.errors import Hm3Error
from hm3.evaluation.expectations import check_expectations
from hm3.evaluation.suite import Dataset, Suite, load_datasets, load_suite


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as .jsonl, .csv or .parquet, by the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["text"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        names = list(rows[0]) if rows else ["text"]
        pq.write_table(pa.table({n: [r[n] for r in rows] for n in names}), path)
    return path


def write_suite(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is valid YAML
    return path


ROWS = [{"text": f"text number {i}", "label": "yes" if i % 3 else "no", "n": i} for i in range(40)]


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_formats_read_the_same_rows(tmp_path, ext):
    write_rows(tmp_path / "data" / f"d.{ext}", ROWS)
    suite = write_suite(
        tmp_path / "suite.yaml",
        {
            "datasets": [
                {
                    "name": "d",
                    "path": f"data/d.{ext}",
                    "expect": {"a": "on", "b": {"column": "label"}},
                },
            ]
        },
    )
    (data,) = load_datasets(load_suite(suite))
    assert data.texts == tuple(r["text"] for r in ROWS)
    assert data.expected == {"a": ("on",) * 40, "b": tuple(r["label"] for r in ROWS)}
    assert data.expect == {"a": "on", "b": "column label"}
    assert data.rows == 40 and data.row_ids == tuple(range(40))


def test_paths_are_relative_to_the_suite_file_and_text_column_configurable(tmp_path, monkeypatch):
    write_rows(tmp_path / "suites" / "data.jsonl", [{"prompt": "hello", "y": 1}])
    suite = write_suite(
        tmp_path / "suites" / "s.yaml",
        {
            "datasets": [
                {
                    "name": "d",
                    "path": "data.jsonl",
                    "text": "prompt",
                    "expect": {"t": {"column": "y"}},
                },
            ]
        },
    )
    monkeypatch.chdir(tmp_path)
    (data,) = load_datasets(load_suite(Path("suites/s.yaml")))
    assert data.texts == ("hello",)
    assert data.expected["t"] == ("1",)  # non-string labels are compared as text
    assert data.name == "d" and data.path.resolve() == (tmp_path / "suites" / "data.jsonl")
    assert load_suite(suite).seed == 0 and load_suite(suite).limit is None


def test_limit_sample_is_seeded_and_deterministic(tmp_path):
    write_rows(tmp_path / "a.jsonl", ROWS)
    write_rows(tmp_path / "b.csv", ROWS)

    def load(seed: int) -> list[Dataset]:
        doc = {
            "limit": 10,
            "seed": seed,
            "datasets": [
                {"name": "a", "path": "a.jsonl", "expect": {"t": "x"}},
                {"name": "b", "path": "b.csv", "expect": {"t": "x"}, "limit": 5},
            ],
        }
        return load_datasets(load_suite(write_suite(tmp_path / f"s{seed}.yaml", doc)))

    a, b = load(0)
    assert len(a.texts) == 10 and len(b.texts) == 5  # a dataset's limit overrides the suite's
    assert a.rows == 40
    assert list(a.row_ids) == sorted(a.row_ids)  # file order is kept
    assert a.texts == tuple(ROWS[i]["text"] for i in a.row_ids)
    assert load(0) == [a, b]  # same seed, same sample
    assert load(1)[0].row_ids != a.row_ids  # another seed, another sample


def test_limit_larger_than_dataset_keeps_everything(tmp_path):
    write_rows(tmp_path / "a.jsonl", ROWS[:3])
    suite = Suite.from_dict(
        {"limit": 100, "datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": "x"}}]},
        root=tmp_path,
    )
    assert load_datasets(suite)[0].row_ids == (0, 1, 2)


def _error(
    tmp_path: Path, dataset: dict, rows: list[dict] | None = None, ext: str = "jsonl"
) -> str:
    if rows is not None:
        write_rows(tmp_path / f"d.{ext}", rows)
    doc = {"datasets": [{"name": "my_set", "path": f"d.{ext}", "expect": {"t": "x"}} | dataset]}
    with pytest.raises(Hm3Error) as exc:
        load_datasets(load_suite(write_suite(tmp_path / "s.yaml", doc)))
    return str(exc.value)


def test_missing_file_names_the_dataset(tmp_path):
    msg = _error(tmp_path, {"path": "nope.jsonl"})
    assert "'my_set'" in msg and "not found" in msg and "nope.jsonl" in msg


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_empty_dataset_names_the_dataset(tmp_path, ext):
    msg = _error(tmp_path, {}, rows=[], ext=ext)
    assert "'my_set'" in msg and "no rows" in msg


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_missing_column_lists_the_columns(tmp_path, ext):
    rows = [{"prompt": "a", "label": "x"}]
    msg = _error(tmp_path, {}, rows=rows, ext=ext)
    assert "'my_set'" in msg and "no column 'text'" in msg and "prompt, label" in msg
    spec = {"text": "prompt", "expect": {"t": {"column": "lbl"}}}
    msg = _error(tmp_path, spec, rows=rows, ext=ext)
    assert "'my_set'" in msg and "no column 'lbl'" in msg


def test_missing_values_name_dataset_and_row(tmp_path):
    msg = _error(tmp_path, {}, rows=[{"text": "a"}, {"text": None}])
    assert "'my_set'" in msg and "row 2 has no text" in msg  # the first row is row 1
    msg = _error(tmp_path, {}, rows=[{"text": "a"}, {"text": "b"}, {"text": "  "}])
    assert "'my_set'" in msg and "row 3 has no text" in msg
    msg = _error(tmp_path, {}, rows=[{"text": "a"}, {"text": "\u200b"}])  # nothing to read
    assert "'my_set'" in msg and "row 2 has no text" in msg
    msg = _error(tmp_path, {}, rows=[{"text": "a"}, {"text": "b \ud800"}])  # a JSON \ud800
    assert "'my_set'" in msg and "row 2 of column 'text' is not valid Unicode text" in msg
    rows = [{"text": "a", "y": "x"}, {"text": "b", "y": ""}]
    msg = _error(tmp_path, {"expect": {"t": {"column": "y"}}}, rows=rows, ext="csv")
    assert "'my_set'" in msg and "row 2 has no expected label" in msg


def test_bad_files_and_formats(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    assert "line 2 is not valid JSON" in _error(tmp_path, {})
    (tmp_path / "d.txt").write_text("a\n", encoding="utf-8")
    msg = _error(tmp_path, {"path": "d.txt"})
    assert "'my_set'" in msg and ".jsonl, .csv, .tsv, .parquet" in msg


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"datasets": []}, "datasets"),
        ({"datasets": [{"name": "a", "path": "a.jsonl", "expect": {}}]}, "expect"),
        (
            {"datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": "x"}, "lable": 1}]},
            "unknown key 'datasets[0].lable'",
        ),
        (
            {"datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": "x"}}], "limt": 3},
            "(did you mean 'limit'?); valid keys at the top level: datasets, limit, seed",
        ),
        (
            {"datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": {"col": "y"}}}]},
            "datasets[0].expect: t: expected a label (t: LABEL) or a column of per-row labels (t: "
            "{column: NAME}), got {'col': 'y'}",
        ),
        (
            {"datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": 1}}]},
            "got 1; quote a label that reads as a number",
        ),
        (
            {"datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": ["x"]}}]},
            "datasets[0].expect: t: expected a label (t: LABEL) or a column",
        ),
        (
            {"datasets": [{"path": "a.jsonl", "expect": {"t": "x"}}]},
            "datasets[0].name: missing; add it",
        ),
        (
            [{"name": "a", "path": "a.jsonl", "expect": {"t": "x"}}],
            "at the top level, found a list; a suite starts with `datasets:`, a list of "
            "{name, path, expect}",
        ),
        (
            {"limit": 0, "datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": "x"}}]},
            "limit",
        ),
        (  # numpy's generator refused it mid-run: an internal error
            {"seed": -5, "datasets": [{"name": "a", "path": "a.jsonl", "expect": {"t": "x"}}]},
            "seed: Input should be greater than or equal to 0 (got -5)",
        ),
        (
            {
                "datasets": [
                    {"name": "a", "path": "x.jsonl", "expect": {"t": "x"}},
                    {"name": "a", "path": "y.jsonl", "expect": {"t": "x"}},
                ]
            },
            "given twice",
        ),
    ],
)
def test_bad_suite_files_name_file_and_key(tmp_path, doc, match):
    path = write_suite(tmp_path / "s.yaml", doc)
    with pytest.raises(Hm3Error, match=r"s\.yaml") as exc:
        load_suite(path)
    assert match in str(exc.value)
    with pytest.raises(Hm3Error, match="not found"):
        load_suite(tmp_path / "missing.yaml")


def test_check_expectations_names_dataset_and_lists_valid_names(tmp_path):
    rows = [{"text": "a", "y": "no"}, {"text": "b", "y": "maybe"}]
    write_rows(tmp_path / "d.jsonl", rows)
    suite = Suite.from_dict(
        {
            "datasets": [
                {"name": "ok", "path": "d.jsonl", "expect": {"t": "no"}},
                {"name": "bad", "path": "d.jsonl", "expect": {"t": {"column": "y"}}},
            ]
        },
        root=tmp_path,
    )
    datasets = load_datasets(suite)
    check_expectations(datasets[:1], {"t": ("no", "yes")})
    with pytest.raises(Hm3Error) as exc:
        check_expectations(datasets, {"t": ("no", "yes")})
    msg = str(exc.value)
    assert "'bad'" in msg and "'maybe'" in msg and "(row 2, column 'y')" in msg and "no, yes" in msg
    with pytest.raises(Hm3Error) as exc:
        check_expectations(datasets, {"u": ("no",), "v": ("no",)})
    assert "'ok'" in str(exc.value) and "'t'" in str(exc.value) and "u, v" in str(exc.value)


def test_restricted_keeps_only_the_given_tasks(tmp_path):
    write_rows(tmp_path / "a.jsonl", [{"text": "x"}])
    doc = {
        "datasets": [
            {"name": "both", "path": "a.jsonl", "expect": {"spam": "ham", "toxicity": "ok"}},
            {"name": "tox", "path": "a.jsonl", "expect": {"toxicity": "ok"}},
        ],
        "limit": 7,
    }
    suite = load_suite(write_suite(tmp_path / "suite.yaml", doc))
    spam = suite.restricted(["spam"])
    assert [(d.name, dict(d.expect)) for d in spam.datasets] == [("both", {"spam": "ham"})]
    assert spam.limit == 7 and spam.source == suite.source
    assert spam.resolve(spam.datasets[0]) == tmp_path / "a.jsonl"
    assert len(suite.datasets) == 2  # the original is unchanged
    expected = "no dataset expects a label for task 'sentiment'; tasks in the suite: spam, toxicity"
    with pytest.raises(Hm3Error, match=expected):
        suite.restricted(["sentiment"])
