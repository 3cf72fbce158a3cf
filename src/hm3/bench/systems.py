"""What ``hm3 bench`` measures, checked before any run: the merged model's tasks, each
original's, each ONNX export's, and the labels they must share.

A system is a runtime and its models; each model comes with the tasks it answers, as (merged
task, its own task) pairs. :func:`check_systems` builds them from the user's paths, or raises
:class:`~hm3.errors.Hm3Error` naming the first thing that does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hm3.bench.names import export_names
from hm3.errors import Hm3Error
from hm3.model.labels import Task, directory_tasks, is_uninformative

ORIGINALS, MERGED = "originals", "merged"

Systems = dict[str, tuple[str, list[tuple[Path, list[tuple[Task, Task]]]]]]


@dataclass(frozen=True)
class Export:
    """What an ``hm3 export onnx`` directory's ``config.json`` says of its graph."""

    precision: str  # float32 or int8
    fused: bool  # holds ONNX Runtime's fused operators


def check_systems(
    merged: Path, originals: Mapping[str, Path], onnx: Sequence[Path]
) -> tuple[list[Task], Systems, dict[str, Export]]:
    """The merged model's tasks, and per system its runtime and its models: each model's
    directory and the tasks it answers as (merged task, its own task) pairs. An original has
    one task (any name), an export the merged model's; each the labels of the merged task.
    Also each export's precision and fusion, by its name (:func:`export_names`)."""
    from hm3.export.runtime import read_export

    ours = _tasks(merged, "--merged")
    tasks = [t.name for t in ours]
    own = {task: _tasks(path, f"--originals {task}") for task, path in originals.items()}
    for task, path in originals.items():
        if len(own[task]) != 1:
            raise Hm3Error(
                f"--originals {task}={path}: expected a single-task classifier, found "
                f"{len(own[task])} tasks; give the original classifier of {task!r}"
            )
    missing = [t for t in tasks if t not in originals]
    extra = [t for t in originals if t not in tasks]
    if missing or extra:
        raise Hm3Error(
            f"--originals: the merged model {merged} answers {', '.join(tasks)}; give exactly one "
            f"original per task (missing: {', '.join(missing) or 'none'}; not in the merged "
            f"model: {', '.join(extra) or 'none'})"
        )
    for t in ours:
        _check_labels(t, own[t.name][0], f"--originals {t.name}={originals[t.name]}")
    systems = {
        ORIGINALS: ("torch", [(originals[t.name], [(t, own[t.name][0])]) for t in ours]),
        MERGED: ("torch", [(merged, [(t, t) for t in ours])]),
    }
    exports = {}
    for name, path in zip(export_names(onnx), onnx, strict=True):
        _, block, found = read_export(path)
        theirs = {t.name: t for t in found}
        if sorted(theirs) != sorted(tasks):
            raise Hm3Error(
                f"--onnx {path}: answers {', '.join(theirs)}, the merged model "
                f"{', '.join(tasks)}; export the merged model (hm3 export onnx {merged} --out "
                "NEW_DIR)"
            )
        for t in ours:
            _check_labels(t, theirs[t.name], f"--onnx {path}")
        systems[f"onnx:{name}"] = ("onnx", [(path, [(t, theirs[t.name]) for t in ours])])
        exports[name] = Export(str(block.get("quantized") or "float32"), bool(block.get("fused")))
    return ours, systems, exports


def _check_labels(task: Task, mine: Task, option: str) -> None:
    """``mine`` must have ``task``'s labels: the same names, or as many where one side has
    placeholder names (``LABEL_0``), as ``hm3 evaluate`` compares models."""
    if set(mine.labels) == set(task.labels):
        return
    placeholders = any(all(map(is_uninformative, t.labels)) for t in (task, mine))
    if placeholders and len(mine.labels) == len(task.labels):
        return
    raise Hm3Error(
        f"{option}: its labels are {', '.join(mine.labels)} but task {task.name!r} of the "
        f"merged model has {', '.join(task.labels)}; give the original classifier of "
        f"{task.name!r} (models compared on a task must share its labels)"
    )


def _tasks(path: Path, option: str) -> list[Task]:
    path = Path(path)
    if not path.is_dir():
        raise Hm3Error(f"{option} {path}: model directory not found; check the path")
    label = f"{option} {path}"
    return directory_tasks(path, label)
