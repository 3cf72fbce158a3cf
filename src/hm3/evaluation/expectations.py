"""A suite's expectations checked against the models being evaluated, before any model runs:
every task a dataset expects is answered, every expected label is one of its task's labels, and
every original is named after a task that something answers or expects. What it does not: read
the suite (:mod:`hm3.evaluation.suite`) or run a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hm3.errors import Hm3Error, spell
from hm3.evaluation.suite import Dataset

# The fixes an evaluation's messages name, as the caller writes them: flags on the command line
# (``hm3 evaluate``), keywords from Python (:func:`hm3.evaluate`).
FIXES = {
    "originals": ("--originals TASK=DIR", "originals={TASK: DIR}"),
    "tasks": ("--tasks", "suite.restricted([TASK, ...])"),
    "bootstrap": ("drop --bootstrap", "set bootstrap=0"),
    "name": ("NAME=DIR", "models={'NAME': ...}"),
}


def fix(name: str) -> str:
    """The fix :data:`FIXES` names ``name``, spelt for the caller (:func:`hm3.errors.spell`)."""
    return spell(*FIXES[name])


def check_expectations(datasets: Sequence[Dataset], tasks: Mapping[str, Sequence[str]]) -> None:
    """Check every expected task and label against the tasks of the models being evaluated.

    Args:
        datasets: the suite's datasets, as read.
        tasks: task name → its label names, over all models being evaluated.

    Raises:
        Hm3Error: naming the dataset, the unknown task or label, and the valid names.
    """
    for data in datasets:
        for task, labels in data.expected.items():
            if task not in tasks:
                raise Hm3Error(
                    f"dataset {data.name!r}: expect names task {task!r}, which no model being "
                    f"evaluated answers; valid tasks: {', '.join(tasks) or 'none'}; fix the name, "
                    f"add a model that answers it ({fix('originals')}), or evaluate only the tasks "
                    f"the models answer ({fix('tasks')})"
                )
            valid = set(tasks[task])
            bad = [i for i, label in enumerate(labels) if label not in valid]
            if bad:
                column = data.label_columns.get(task)
                row = f" (row {data.row_ids[bad[0]] + 1}, column {column!r})" if column else ""
                raise Hm3Error(
                    f"dataset {data.name!r}: expected label {labels[bad[0]]!r} for task {task!r}"
                    f"{row} is not one of its labels: {', '.join(tasks[task])}; fix the suite or "
                    "the data"
                )


def check_originals(
    datasets: Sequence[Dataset], originals: Sequence[str], answered: Sequence[str]
) -> None:
    """Refuse an original whose task (``--originals TASK=DIR``) no model answers and no dataset
    expects: a misspelt or misnamed task that would silently go unscored.

    Args:
        datasets: the suite's datasets, as read.
        originals: the originals' task names, as the user gave them.
        answered: the tasks the models other than the originals answer.
    """
    known = dict.fromkeys([*answered, *(t for data in datasets for t in data.expected)])
    for task in originals:
        if task not in known:
            where = spell(f"--originals {task}=…", f"originals={{{task!r}: …}}")
            raise Hm3Error(
                f"{where}: no model answers task {task!r} and no dataset expects "
                f"it; known tasks: {', '.join(known) or 'none'}; name the original after one "
                "(a model's task is its `name:` in the merge config, else its directory's name)"
            )
