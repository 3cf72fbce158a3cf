"""The texts head alignment fits on: opened, checked before the pass, checked after it, hashed.

One file for every head, or a file per task (:func:`texts_by_task`): each head is then fitted
on its own task's texts only. Messages name the file as its caller gave it (``--texts``, or
``texts_file`` from Python). Reading the rows is :mod:`hm3.io.texts`'; nothing runs a model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hm3.alignment.fit import RidgeStats
from hm3.alignment.result import AlignPlan
from hm3.errors import Hm3Error, spell
from hm3.io.paths import as_path
from hm3.io.texts import TextCount, TextFile, open_texts, sha256_file
from hm3.model.labels import Task

log = logging.getLogger("hm3")
# Below this share of varying feature energy the texts are copies of one text: the differences
# left are float noise from padding (batches of different lengths), not information.
MIN_VARYING_SHARE = 1e-9


def opened(
    texts_file: str | Path | TextFile, text_column: str, task: str | None = None
) -> TextFile:
    """``texts_file`` opened and checked (already, if a :class:`TextFile`); ``task``: the task
    whose own file it is, for messages."""
    if isinstance(texts_file, TextFile):
        return texts_file
    name = "texts_file" if task is None else f"texts_file[{task!r}]"
    path = as_path(texts_file, name)
    if task is None:
        return open_texts(path, text_column)
    where = spell(f"--texts {task}={path}", f"texts_file[{task!r}]={str(path)!r}")
    return open_texts(path, text_column, where=where)


def texts_by_task(
    texts_file: Mapping[str, Any], tasks: list[Task], merged: Path, text_column: str
) -> dict[str, TextFile]:
    """Each task's own text file: every task named once, no other name."""
    names = [t.name for t in tasks]
    problem = task_files_problem(texts_file, names)
    if problem is not None:
        raise Hm3Error(f"{spell('--texts TASK=FILE', 'texts_file')}: {problem} ({merged}'s tasks: "
                       f"{', '.join(names)}); give one file for every task, or one for every "
                       "head")  # fmt: skip
    files = {name: opened(texts_file[name], text_column, name) for name in names}
    columns = {file.column for file in files.values()}
    if len(columns) > 1:  # files opened beforehand, each in its own column
        shown = ", ".join(sorted(columns))
        raise Hm3Error(f"texts_file: its files are read in different columns ({shown}); open "
                       "them in one text column")  # fmt: skip
    return files


def task_files_problem(given: Iterable[str], names: list[str]) -> str | None:
    """What is wrong with the tasks a file-per-task mapping names (``None``: every task once)."""
    given = list(given)
    unknown = [task for task in given if task not in names]
    if unknown:
        return f"{unknown[0]!r} is no task of the merge"
    missing = [task for task in names if task not in given]
    return f"no file for task {missing[0]!r}" if missing else None


def texts_sha256(plan: AlignPlan) -> str | dict[str, str]:
    """The text file's sha256, or each task's file's."""
    if isinstance(plan.texts, TextFile):
        return sha256_file(plan.texts.path)
    by_path = {file.path.resolve(): sha256_file(file.path) for file, _ in plan.files()}
    return {name: by_path[file.path.resolve()] for name, file in plan.texts.items()}


def check_texts(texts: TextFile, stats: RidgeStats, count: TextCount) -> None:
    """Refuse texts a fit cannot use; warn about skipped rows and too few texts."""
    if stats.n == 0:
        raise Hm3Error(
            f"{texts.where}: no texts in column {texts.column!r} ({count.skipped} blank "
            "rows); give a file with unlabeled texts"
        )
    if count.skipped:
        log.warning(
            "%s: %d rows with no text skipped (rows %s...)",
            texts.where,
            count.skipped,
            ", ".join(map(str, count.first_skipped)),
        )
    if stats.varying_share() < MIN_VARYING_SHARE:
        raise Hm3Error(
            f"{texts.where}: its {stats.n} text(s) all give the merged model the same "
            "features, so they cannot tell a head what to change; give a few hundred different "
            "texts of the domains its heads serve"
        )
    if stats.n < stats.dim:
        log.warning(
            "%s: %d texts for a head that reads %d features: along the directions the texts do "
            "not span, the ridge alone decides the fit; give at least %d (on the demo zoo: "
            "about 1,000 covering every task, or with a file per task 250 of each task's own; "
            "docs/results/alignment.md)",
            texts.where,
            stats.n,
            stats.dim,
            stats.dim,
        )
