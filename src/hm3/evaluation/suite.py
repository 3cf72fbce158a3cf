"""Evaluation suites: which datasets to run, and which label each task is expected to give.

A suite (YAML) follows the paper's test setup (§5.2, Tables 3 and 6): each dataset has an
expected label per task, constant for the whole dataset (a "positive" set for one label, or a
cross-check of another task's data) or read per row from a column::

    datasets:
      - name: benign_questions
        path: data/benign.jsonl          # .jsonl, .csv, .tsv or .parquet, relative to the suite
        text: text                       # text column (default: text)
        expect: {prompt_attack: benign, toxicity: non_toxic}
      - name: spam_test
        path: data/spam_test.csv
        expect: {spam: {column: label}}  # per-row expected label from a column
        limit: 500                       # optional, overrides the suite's limit
    limit: 3000                          # optional: at most this many rows per dataset
    seed: 0                              # seed of the limit's sample (default 0)

This module validates the file (frozen pydantic models, unknown keys refused), reads the
datasets into :class:`Dataset` objects (texts and expected labels per task, seeded sample
applied); :mod:`hm3.evaluation.expectations` checks them against the tasks of the models being
evaluated. Every error names the dataset. It runs no model and computes no metric (see
:mod:`hm3.evaluation.run`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hm3.errors import Hm3Error
from hm3.io.paths import absolute, as_path
from hm3.io.tables import read_columns, table_format
from hm3.io.texts import NOT_UNICODE, is_blank, lone_surrogate
from hm3.io.yaml_input import (
    PathText,
    UserModel,
    as_written,
    format_validation_error,
    load_yaml_mapping,
    shorten,
)

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_NAME = r"^[A-Za-z0-9_.\-]+$"


class ColumnExpect(BaseModel):
    """Per-row expected labels, read from a column of the dataset."""

    model_config = _FROZEN

    column: str = Field(min_length=1)


class DatasetSpec(BaseModel):
    """One dataset of a suite, as written in the YAML file."""

    model_config = _FROZEN

    name: str = Field(pattern=_NAME)
    path: PathText = Field(min_length=1)
    text: str = Field(default="text", min_length=1)
    expect: dict[str, str | ColumnExpect] = Field(min_length=1)
    limit: int | None = Field(default=None, gt=0)

    @field_validator("expect", mode="before")
    @classmethod
    def _one_expectation_each(cls, value: Any) -> Any:
        """A label or ``{column: NAME}`` per task, said in one line (pydantic would report
        both branches of the union, under their class names)."""
        for task, want in value.items() if isinstance(value, dict) else ():
            ok = isinstance(want, str) or (
                isinstance(want, dict)
                and list(want) == ["column"]
                and isinstance(want["column"], str)
            )
            if not ok:
                quote = "; quote a label that reads as a number" * isinstance(want, int | float)
                raise ValueError(
                    f"{task}: expected a label ({task}: LABEL) or a column of per-row labels "
                    f"({task}: {{column: NAME}}), got {shorten(as_written(want))}{quote}"
                )
        return value

    def describe(self, task: str) -> str:
        """The expected label of ``task`` for humans: a label, or ``column <name>``."""
        want = self.expect[task]
        return want if isinstance(want, str) else f"column {want.column}"


class Suite(UserModel):
    """A validated suite. Build it with :func:`load_suite`, :meth:`from_dict` or from keyword
    arguments (relative paths then resolve against the current directory); a bad one raises
    one :class:`~hm3.errors.Hm3Error`. ``model_copy(update=...)`` validates nothing."""

    model_config = _FROZEN

    datasets: tuple[DatasetSpec, ...] = Field(min_length=1)
    limit: int | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)  # numpy draws from a seed >= 0
    _root: Path = PrivateAttr(default_factory=Path)
    _source: str = PrivateAttr(default="suite")

    what: ClassVar[str] = "suite"  # keyword construction errors: UserModel

    @model_validator(mode="after")
    def _unique_names(self) -> Suite:
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"datasets: name(s) {', '.join(dupes)} given twice; names must differ")
        return self

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "suite", root: str | Path | None = None
    ) -> Suite:
        """Validate a suite mapping; relative paths resolve against ``root`` (default: the
        current directory), made absolute now: a later ``os.chdir`` changes nothing."""
        try:
            suite = cls.model_validate(data)
        except ValidationError as exc:
            raise Hm3Error(f"{source}: {format_validation_error(exc, cls)}") from None
        suite._root = absolute(root if root is not None else ".")
        suite._source = source
        return suite

    @property
    def source(self) -> str:
        """Where the suite came from (its file path), for messages and reports."""
        return self._source

    def restricted(self, tasks: Sequence[str], fix: str = "") -> Suite:
        """The suite for a subset of tasks: other tasks' expectations (and datasets left with
        none) dropped. Raises :class:`Hm3Error` if no dataset expects any of ``tasks``; ``fix``
        ends the message of a task the suite does not know."""
        keep = set(tasks)
        known = dict.fromkeys(t for d in self.datasets for t in d.expect)
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise Hm3Error(
                f"{self.source}: no dataset expects a label for task {unknown[0]!r}; tasks in "
                f"the suite: {', '.join(known) or 'none'}{'; ' + fix if fix else ''}"
            )
        datasets = [
            d.model_copy(update={"expect": {t: w for t, w in d.expect.items() if t in keep}})
            for d in self.datasets
            if keep & set(d.expect)
        ]
        if not datasets:
            raise Hm3Error(
                f"{self.source}: no dataset expects a label for {', '.join(tasks)}; "
                "add datasets for these tasks"
            )
        return self.model_copy(update={"datasets": tuple(datasets)})

    def resolve(self, spec: DatasetSpec) -> Path:
        """A dataset's path, resolved against the suite file's directory."""
        path = Path(spec.path).expanduser()
        return path if path.is_absolute() else self._root / path


def load_suite(path: str | Path) -> Suite:
    """Load and validate a suite file (YAML); errors name the file and the key."""
    path = as_path(path, "suite")
    data = load_yaml_mapping(path, "suite", "`datasets:`, a list of {name, path, expect}")
    return Suite.from_dict(data, source=str(path), root=path.parent)


@dataclass(frozen=True)
class Dataset:
    """A dataset read from disk: its texts and, per task, the expected label of every row."""

    name: str
    path: Path
    texts: tuple[str, ...]
    expected: Mapping[str, tuple[str, ...]]
    expect: Mapping[str, str]  # per task: the label, or "column <name>" (for reports)
    label_columns: Mapping[str, str]  # task → column, for per-row expectations
    row_ids: tuple[int, ...]  # each kept row's index among the file's rows (0-based)
    rows: int  # rows in the file, before the limit's sample


def load_datasets(suite: Suite) -> list[Dataset]:
    """Read every dataset of ``suite`` (sampled down to its limit), in suite order."""
    return [read_dataset(suite, spec) for spec in suite.datasets]


def read_dataset(suite: Suite, spec: DatasetSpec) -> Dataset:
    """Read one dataset: the text column, label columns, then the seeded ``limit`` sample."""
    path = suite.resolve(spec)
    where = f"dataset {spec.name!r} ({path})"
    label_columns = {t: w.column for t, w in spec.expect.items() if isinstance(w, ColumnExpect)}
    columns = _read_columns(path, [spec.text, *label_columns.values()], where)
    rows = len(columns[spec.text])
    limit = spec.limit or suite.limit
    keep = np.arange(rows)
    if limit is not None and rows > limit:
        keep = np.sort(np.random.default_rng(suite.seed).choice(rows, size=limit, replace=False))
    texts = tuple(_texts(columns[spec.text], keep, spec.text, where))
    expected = {
        task: tuple(_labels(columns[label_columns[task]], keep, label_columns[task], where))
        if task in label_columns
        else (want,) * len(keep)
        for task, want in spec.expect.items()
    }
    expect = {task: spec.describe(task) for task in spec.expect}
    row_ids = tuple(int(i) for i in keep)
    return Dataset(spec.name, path, texts, expected, expect, label_columns, row_ids, rows)


def _read_columns(path: Path, needed: list[str], where: str) -> dict[str, list[Any]]:
    """The ``needed`` columns of a table file (:mod:`hm3.io.tables`), as lists of row values."""
    table_format(path, where, "check the path (relative to the suite file)")
    names, columns, rows = read_columns(path, where, needed)
    if rows == 0:
        raise Hm3Error(f"{where}: has no rows; add examples or remove it from the suite")
    missing = [c for c in dict.fromkeys(needed) if c not in names]
    if missing:
        shown = ", ".join(names) or "none"
        raise Hm3Error(
            f"{where}: no column {missing[0]!r}; columns in the file: {shown}; set the dataset's "
            "'text' or the expect column to one of them"
        )
    return columns


def _texts(values: list[Any], keep: np.ndarray, column: str, where: str) -> list[str]:
    out = []
    for i in keep:
        value = values[i]
        if not isinstance(value, str) or is_blank(value):
            raise Hm3Error(
                f"{where}: row {i + 1} has no text in column {column!r} (got {value!r}); remove "
                "the row or fill it in"
            )
        at = lone_surrogate(value)
        if at is not None:
            raise Hm3Error(f"{where}: row {i + 1} of column {column!r} is "
                           f"{NOT_UNICODE.format(at=at)}; fix the row or remove it")  # fmt: skip
        out.append(value)
    return out


def _labels(values: list[Any], keep: np.ndarray, column: str, where: str) -> list[str]:
    out = []
    for i in keep:
        value = values[i]
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            raise Hm3Error(
                f"{where}: row {i + 1} has no expected label in column {column!r}; remove the row "
                "or fill it in"
            )
        out.append(str(value))
    return out
