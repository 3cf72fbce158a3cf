"""Tasks, label names and the ``hm3`` block of a merged model's ``config.json``.

A merged model concatenates the label spaces of its tasks (HM3, Definition 1): task *i* owns
the contiguous segment ``[start, end)`` of the logits. ``id2label`` entries are
``"<task>/<label>"`` so names repeated across tasks stay distinct. Label names are a task's
own unless uninformative (``LABEL_0``, ``label_1``, ``0``); those are replaced by names given
in the merge config, else by ``class_<i>``.

This module reads no weights; it turns configs into :class:`Task` lists and back.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hm3.errors import Hm3Error
from hm3.io.checkpoint import read_config
from hm3.io.paths import dir_name

log = logging.getLogger("hm3")

METADATA_VERSION = 1
_UNINFORMATIVE = re.compile(r"^(label|class)?[ _\-]?\d+$", re.IGNORECASE)


@dataclass(frozen=True)
class Task:
    """One task of a (merged) classifier: its labels and its segment of the logits."""

    name: str
    labels: tuple[str, ...]
    start: int
    end: int
    source: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start


def is_uninformative(name: str) -> bool:
    """True for placeholder names such as ``LABEL_0``, ``label1``, ``class_2`` or ``0``."""
    return bool(_UNINFORMATIVE.match(name.strip()))


def own_labels(config: dict, source: str) -> list[str]:
    """The label names stored in a classifier's ``config.json``, in id order."""
    id2label = config.get("id2label")
    num = config.get("num_labels")
    if isinstance(id2label, dict) and id2label:
        try:
            items = sorted((int(k), str(v)) for k, v in id2label.items())
        except ValueError:
            raise Hm3Error(f"{source}: config.json id2label keys must be integers") from None
        if [i for i, _ in items] != list(range(len(items))):
            raise Hm3Error(f"{source}: config.json id2label ids must be 0..n-1 without gaps")
        return [name for _, name in items]
    if num is None:
        num = 2  # transformers' default: it omits id2label from config.json for 2 default labels
    if isinstance(num, int) and num > 0:
        return [f"LABEL_{i}" for i in range(num)]
    raise Hm3Error(f"{source}: config.json num_labels must be a positive integer (got {num!r})")


def resolve_labels(task: str, own: list[str], given: tuple[str, ...] | None) -> tuple[str, ...]:
    """Apply the naming rule to one task's labels.

    Args:
        task: task name, for messages.
        own: the model's own label names, in id order.
        given: names from the merge config, or ``None``.

    Returns:
        The final label names: own names where informative, else the given name at that index,
        else ``class_<i>``; repeats within the task get a ``_2``, ``_3`` ... suffix.
    """
    if given is not None and len(given) != len(own):
        raise Hm3Error(
            f"models[{task}].labels: {len(given)} names given but the model has {len(own)} "
            f"labels ({', '.join(own)}); give exactly {len(own)}"
        )
    names = []
    for i, name in enumerate(own):
        if not is_uninformative(name):
            if given is not None and given[i] != name:
                log.warning(
                    "task %s: label %d is %r in the model; the config's %r is ignored because "
                    "the model's own name is informative",
                    task,
                    i,
                    name,
                    given[i],
                )
            names.append(name)
        else:
            names.append(given[i] if given is not None else f"class_{i}")
    return _dedupe(task, names)


def _dedupe(task: str, names: list[str]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    if out != names:
        log.warning("task %s: repeated label names renamed to %s", task, out)
    return tuple(out)


def layout(entries: list[tuple[str, tuple[str, ...], str]]) -> list[Task]:
    """Place tasks (name, labels, source) side by side in config order (Algorithm 1)."""
    tasks, start = [], 0
    for name, labels, source in entries:
        tasks.append(Task(name, labels, start, start + len(labels), source))
        start += len(labels)
    return tasks


def id2label(tasks: list[Task]) -> dict[str, str]:
    return {
        str(task.start + i): f"{task.name}/{label}"
        for task in tasks
        for i, label in enumerate(task.labels)
    }


# -- the hm3 block of config.json ----------------------------------------------------------
class _Frozen(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class TaskMeta(_Frozen):
    name: str
    labels: list[str] = Field(min_length=1)
    start: int = Field(ge=0)
    end: int
    source: str = ""


class Hm3Metadata(_Frozen):
    version: int
    tasks: list[TaskMeta] = Field(min_length=1)
    merge: dict[str, Any] = {}
    align: dict[str, Any] | None = None


def metadata_block(tasks: list[Task], merge: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": METADATA_VERSION,
        "tasks": [
            {
                "name": t.name,
                "labels": list(t.labels),
                "start": t.start,
                "end": t.end,
                "source": t.source,
            }
            for t in tasks
        ],
        "merge": merge,
    }


def tasks_from_config(config: dict, default_name: str, source: str) -> list[Task]:
    """The tasks of any classifier: from the ``hm3`` block, else one task from ``id2label``."""
    block = config.get("hm3")
    if block is None:
        labels = resolve_labels(default_name, own_labels(config, source), None)
        return layout([(default_name, labels, source)])
    try:
        meta = Hm3Metadata.model_validate(block)
    except ValidationError as exc:
        raise Hm3Error(
            f"{source}: config.json has a malformed hm3 block ({exc.errors()[0]['msg']})"
        ) from None
    if meta.version > METADATA_VERSION:
        raise Hm3Error(
            f"{source}: hm3 metadata version {meta.version} is newer than this hm3 understands "
            f"({METADATA_VERSION}); upgrade hm3"
        )
    tasks = [Task(t.name, tuple(t.labels), t.start, t.end, t.source) for t in meta.tasks]
    _check_segments(tasks, len(own_labels(config, source)), source)
    return tasks


def _check_segments(tasks: list[Task], num_labels: int, source: str) -> None:
    names = [t.name for t in tasks]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise Hm3Error(
            f"{source}: hm3 task name {twice!r} given twice in config.json (one task's "
            "predictions would hide the other's); the config.json was edited, rename one"
        )
    position = 0
    for task in tasks:
        if task.start != position or task.size != len(task.labels):
            raise Hm3Error(
                f"{source}: hm3 task {task.name!r} segment [{task.start}, {task.end}) does not "
                "follow the previous one or does not match its labels; the config.json was edited"
            )
        position = task.end
    if position != num_labels:
        raise Hm3Error(
            f"{source}: hm3 tasks cover {position} labels but the model has {num_labels}"
        )


def directory_tasks(path: Path, label: str) -> list[Task]:
    """The tasks of the classifier directory ``path``, from its ``config.json`` alone (no
    weights read); a single task is named after the directory. ``label`` names it in errors."""
    return tasks_from_config(read_config(path, label), dir_name(path), label)
