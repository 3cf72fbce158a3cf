"""Which original classifier each task of a merged model is aligned to, and whether it fits.

A task's original is, by default, the ``source`` recorded for it in the merged model's
``hm3`` block (a directory, or a Hugging Face Hub id found in the local cache); ``--originals
TASK=DIR`` overrides it. An ordinary classifier (no ``hm3`` block) records no source, so its
one task needs ``--originals``. An original is accepted only if its label space matches the
task's: the same number of labels and, position by position, the same names wherever both
names are informative (compared ignoring case and surrounding spaces). Placeholder names
(``LABEL_0``) match anything, because the merge config may have named them. Informative names
that differ — ``[neg, pos]`` for a task ``[pos, neg]`` — are an error: fitting them would
silently swap labels. An original that is itself a merged model must have a task of the same
name (or exactly one task).

This module reads configs only; it loads no weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hm3.errors import Hm3Error, spell
from hm3.io.checkpoint import locate, read_config
from hm3.io.paths import as_path, dir_name
from hm3.model.features import Original
from hm3.model.labels import Task, is_uninformative, own_labels, resolve_labels, tasks_from_config


def resolve_originals(
    tasks: list[Task], overrides: Mapping[str, str | Path] | None, merged: Path
) -> dict[str, Original]:
    """Find and check the original of every task.

    Args:
        tasks: the merged model's tasks (``source`` empty when nothing is recorded).
        overrides: task name → original directory, replacing the recorded source.
        merged: the merged model directory, for messages.

    Returns:
        Task name → :class:`Original`, in task order.
    """
    if overrides is not None and not isinstance(overrides, Mapping):
        got = type(overrides).__name__
        raise Hm3Error(f"originals: expected a dict of task -> directory, got {got}, e.g. "
                       "{'toxicity': 'models/toxicity'}")  # fmt: skip
    overrides = dict(overrides or {})
    names = [t.name for t in tasks]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise Hm3Error(
            f"{_option(unknown[0], '...')}: {merged} has no task {unknown[0]!r}; its tasks are: "
            f"{', '.join(names)}"
        )
    return {task.name: _original(task, overrides.get(task.name), merged) for task in tasks}


def _option(task: str, value: str = "DIR", python: str | None = None) -> str:
    """``--originals TASK=DIR`` on the command line, ``originals={'TASK': DIR}`` from Python
    (``python``: how Python writes ``value``, if not as it is)."""
    return spell(f"--originals {task}={value}", f"originals={{{task!r}: {python or value}}}")


def _original(task: Task, override: str | Path | None, merged: Path) -> Original:
    hint = f"pass {_option(task.name)} with the classifier this task came from"
    if override is not None:
        path = as_path(override, f"originals[{task.name!r}]")
        if not path.is_dir():
            given = _option(task.name, str(override), repr(str(override)))
            raise Hm3Error(f"{given}: directory not found; check the path")
        ref = str(path.resolve())
    elif not task.source:
        raise Hm3Error(
            f"task {task.name!r}: {merged}/config.json records no original for it; {hint}"
        )
    else:
        ref = task.source
        try:
            path = locate(ref, f"task {task.name!r}")
        except Hm3Error:
            raise Hm3Error(
                f"task {task.name!r}: its original {ref} (recorded in {merged}/config.json) cannot "
                f"be found; {hint}"
            ) from None
    start, end = check_labels(task, path)
    return Original(task.name, ref, path, start, end)


def check_labels(task: Task, path: Path) -> tuple[int, int]:
    """Check that the classifier at ``path`` has ``task``'s label space.

    Returns:
        The ``[start, end)`` segment of its logits that answers the task.
    """
    label = f"original of task {task.name!r} ({path})"
    config = read_config(path, label)
    if config.get("hm3") is not None:
        candidates = tasks_from_config(config, dir_name(path), label)
        named = [t for t in candidates if t.name == task.name]
        if not named and len(candidates) > 1:
            raise Hm3Error(
                f"{label}: a merged model without a task named {task.name!r} (it has "
                f"{', '.join(t.name for t in candidates)}); pass {_option(task.name)}"
            )
        own = list((named or candidates)[0].labels)
        names, start = own, (named or candidates)[0].start
    else:
        own = own_labels(config, label)
        names, start = list(resolve_labels(task.name, own, None)), 0
    _compare(task, own, names, label)
    return start, start + len(own)


def _compare(task: Task, own: list[str], names: list[str], label: str) -> None:
    fix = f"pass {_option(task.name)} with the classifier this task was merged from"
    if len(own) != task.size:
        raise Hm3Error(
            f"{label}: has {len(own)} labels ({', '.join(own)}) but task {task.name!r} has "
            f"{task.size} ({', '.join(task.labels)}); {fix}"
        )

    def key(name: str) -> str:
        return name.strip().casefold()

    differ = [
        i
        for i, (mine, theirs) in enumerate(zip(names, task.labels, strict=True))
        if key(mine) != key(theirs)
        and not is_uninformative(own[i])
        and not is_uninformative(theirs)
    ]
    if not differ:
        return
    if sorted(map(key, names)) == sorted(map(key, task.labels)):
        raise Hm3Error(
            f"{label}: has the labels of task {task.name!r} in another order ({', '.join(names)} "
            f"vs {', '.join(task.labels)}); aligning would swap them; {fix}"
        )
    i = differ[0]
    raise Hm3Error(
        f"{label}: label {i} is {names[i]!r} but task {task.name!r} calls it "
        f"{task.labels[i]!r} (labels {', '.join(names)} vs {', '.join(task.labels)}); {fix}"
    )
