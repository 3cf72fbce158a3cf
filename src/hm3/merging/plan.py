"""Open and check every input of a merge, and say where each output tensor comes from.

:func:`build_plan` opens the base and the fine-tuned checkpoints (headers only), checks that
they can be merged — one architecture, one hidden size, body shapes equal to the base's, a
classification head on every model, one tokenizer vocabulary — and lays out the tasks. Each
output tensor gets a :class:`TensorPlan`: a body tensor with a base value, a body tensor the
base lacks (no task vector: ``MergeConfig.no_base`` says how it is merged; a warning says so),
the label projection (HM3-expanded, base all zeros), or a non-float buffer copied as is.
:meth:`MergePlan.inputs` then loads one tensor of every model at a time.

The checks that the inputs fit together are :mod:`hm3.merging.checks`'. It merges nothing;
:mod:`hm3.merging.stream` streams a plan to disk, :mod:`hm3.model.heads` pads projections.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hm3.errors import Hm3Error
from hm3.io.checkpoint import Checkpoint, locate
from hm3.io.paths import dir_name
from hm3.merging.checks import check_counterparts, check_family, check_vocab, same_tensors
from hm3.merging.config import MergeConfig
from hm3.methods import METHODS
from hm3.model.architectures import (
    Architecture,
    base_counterpart,
    resolve_architecture,
    with_body_prefix,
)
from hm3.model.heads import expand_rows, zero_rows
from hm3.model.labels import Task, layout, own_labels, resolve_labels, tasks_from_config

log = logging.getLogger("hm3")

Kind = Literal["body", "no_base", "projection", "constant"]


@dataclass(frozen=True)
class TensorPlan:
    """How one output tensor is made."""

    name: str
    kind: Kind
    shape: tuple[int, ...]  # output shape (projection: [K, ...])
    dtype: torch.dtype  # stored dtype of the first model's tensor
    base_name: str | None = None  # name in the base checkpoint (body tensors)


@dataclass
class MergePlan:
    config: MergeConfig
    base: Checkpoint
    models: list[Checkpoint]
    model_dirs: list[Path]
    arch: Architecture
    tasks: list[Task]
    tensors: list[TensorPlan]
    warnings: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return self.tasks[-1].end

    def inputs(
        self,
        tp: TensorPlan,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        with_base: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Load the HM3-expanded inputs of one tensor.

        Returns:
            ``(base, stacked)``: the base value (``None`` when the base lacks the tensor or
            ``with_base`` is false) and the
            models' values stacked along a new first axis, all in ``dtype`` on ``device``.
        """
        stacked = torch.empty((len(self.models), *tp.shape), dtype=dtype, device=device)
        for i, (model, task) in enumerate(zip(self.models, self.tasks, strict=True)):
            if tp.kind == "projection":
                value = self._load(model, tp.name, device, dtype)
                stacked[i].copy_(expand_rows(value, task.start, self.num_labels))
            else:  # straight from the file into the stacked buffer when dtypes match
                _check_finite(model, tp.name, model.read_into(tp.name, stacked[i]))
        if tp.kind == "projection":
            return zero_rows(stacked[0], self.num_labels), stacked
        if tp.base_name is None or not with_base:
            return None, stacked
        return self._load(self.base, tp.base_name, device, dtype), stacked

    def _load(
        self, ckpt: Checkpoint, name: str, device: str | torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        info = ckpt.tensors[name]
        value = torch.empty(info.shape, dtype=dtype, device=device)
        return _check_finite(ckpt, name, ckpt.read_into(name, value))

    def seed_for(self, name: str, index: int) -> int:
        """Seed of model ``index``'s random draws for tensor ``name`` (same config → same bytes)."""
        digest = hashlib.sha256(f"{self.config.seed}:{name}:{index}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    def close(self) -> None:
        for ckpt in (self.base, *self.models):
            ckpt.close()


def all_finite(value: torch.Tensor) -> bool:
    """``torch.isfinite(value).all()``, through numpy on the CPU (many times faster there)."""
    if value.device.type == "cpu" and value.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(value.detach().numpy()).all())
    return bool(torch.isfinite(value).all())


def _check_finite(ckpt: Checkpoint, name: str, value: torch.Tensor) -> torch.Tensor:
    if not all_finite(value):
        raise Hm3Error(
            f"{ckpt.label}: tensor {name} contains NaN or Inf values; the checkpoint is "
            "broken — re-export it from a healthy training run"
        )
    return value


def build_plan(
    config: MergeConfig, *, allow_pickle: bool = False, idle: bool = True
) -> MergePlan:  # fmt: skip
    """Open and validate all inputs of ``config``; read headers only. ``idle``: warn about the
    parameters that change nothing (:meth:`MergeConfig.idle_parameters`); off for a search,
    whose trials draw their own.

    Raises:
        Hm3Error: any input that cannot be merged, with the file and the fix.
    """
    base_dir = locate(config.resolve(config.base_model), "base_model")
    model_dirs = [
        locate(config.resolve(m.model), f"models[{i}]") for i, m in enumerate(config.models)
    ]
    base = Checkpoint(base_dir, allow_pickle=allow_pickle, role="base_model")
    models = [
        Checkpoint(d, allow_pickle=allow_pickle, role=f"models[{i}]")
        for i, d in enumerate(model_dirs)
    ]
    try:
        projection = config.heads.projection if config.heads else None
        arch = resolve_architecture(models[0].config, models[0].label, projection)
        arch = with_body_prefix(arch, models[0].tensors, base.tensors)
        check_family(arch, base, models)
        tasks = _tasks(config, arch, models, model_dirs)
        warnings: list[str] = []
        tensors, no_base = _tensor_plans(arch, base, models, tasks[-1].end)
        if no_base:
            warnings.append(no_base_note(config, no_base))
            log.warning(warnings[-1])
        for note in config.idle_parameters() if idle else []:  # set, but changing nothing
            warnings.append(note)
            log.warning(note)
        check_vocab(base, models)
    except BaseException:
        for ckpt in (base, *models):
            ckpt.close()
        raise
    return MergePlan(config, base, models, model_dirs, arch, tasks, tensors, warnings)


def _tasks(
    config: MergeConfig, arch: Architecture, models: list[Checkpoint], dirs: list[Path]
) -> list[Task]:
    entries: list = []
    used: set[str] = set()
    named = {m.name: i for i, m in enumerate(config.models) if m.name}  # distinct (MergeConfig)
    for j, (entry, ckpt, path) in enumerate(zip(config.models, models, dirs, strict=True)):
        _single_task(ckpt)
        own = own_labels(ckpt.config, ckpt.label)
        shapes = {name: info.shape for name, info in ckpt.tensors.items()}
        arch.check_head(shapes, len(own), ckpt.label, _NO_HEAD_FIX)
        if ckpt.config.get("problem_type") == "multi_label_classification":
            log.warning("%s is a multi-label classifier; hm3 applies softmax per task", ckpt.label)
        name = entry.name or default_name(entry.model, path, used)
        if not entry.name and name in named:
            _name_taken(config, j, named[name], name)
        used.add(name)
        local = Path(config.resolve(entry.model)).is_dir()
        source = str(path.resolve()) if local else entry.model
        entries.append((name, resolve_labels(name, own, entry.labels), source))
    return layout(entries)


def _single_task(ckpt: Checkpoint) -> None:
    """Refuse a model of several tasks (an hm3 merge, or an ``hm3 expand`` output): merged again,
    its label segments would become one task, one softmax across tasks it keeps apart."""
    tasks = tasks_from_config(ckpt.config, "model", ckpt.label)
    if len(tasks) > 1:
        names = ", ".join(t.name for t in tasks)
        sources = ", ".join(dict.fromkeys(t.source for t in tasks if t.source))
        raise Hm3Error(
            f"{ckpt.label}: an hm3 model of {len(tasks)} tasks ({names}), which a merge would "
            "fold into one task; merge the models it was made from instead"
            + (f" ({sources})" if sources else "")
        )


def _name_taken(config: MergeConfig, j: int, i: int, name: str) -> None:
    """Refuse model ``j``'s default task name, given to model ``i`` (one task would hide the
    other's predictions)."""
    raise Hm3Error(
        f"models[{j}] ({config.models[j].model}): its task name {name!r} (from its directory) is "
        f"also the name given to models[{i}] ({config.models[i].model}); give models[{j}] "
        "another `name:`"
    )


_NO_HEAD_FIX = (
    "Use it as base_model, or declare `heads: {projection: [...]}` in the config if its head "
    "has other names"
)


def task_names(entries: list[tuple[str | None, str, Path]]) -> list[str]:
    """Task names as a merge gives them from ``(name, ref, path)``: own, else directory's."""
    out: list[str] = []
    for name, ref, path in entries:
        out.append(name or default_name(ref, path, set(out)))
    return out


def default_name(ref: str, path: Path, used: set[str]) -> str:
    """The name of a task whose entry gives none: its directory's, as ``ref`` writes it (not
    resolved through links), numbered on from 2 where ``used`` has it."""
    stem = Path(ref.rstrip("/")).name
    if stem in ("", ".", ".."):  # `.` or `..`: the directory they stand for
        stem = dir_name(path)
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    return name


def _tensor_plans(
    arch: Architecture, base: Checkpoint, models: list[Checkpoint], total: int
) -> tuple[list[TensorPlan], list[str]]:
    """Every output tensor's plan, and the names of the float body tensors the base lacks."""
    first = models[0]
    for ckpt in models[1:]:
        same_tensors(arch, first, ckpt)
    plans, no_base = [], []
    for name, info in first.tensors.items():
        if arch.is_projection(name):
            plans.append(TensorPlan(name, "projection", (total, *info.shape[1:]), info.dtype))
            continue
        if not info.dtype.is_floating_point:
            plans.append(TensorPlan(name, "constant", info.shape, info.dtype))
            continue
        base_name = base_counterpart(arch, base.tensors, name)
        if base_name is None:
            no_base.append(name)
        elif base.tensors[base_name].shape != info.shape:
            raise Hm3Error(
                f"{first.label}: tensor {name} has shape {list(info.shape)} but the base's is "
                f"{list(base.tensors[base_name].shape)}; was this model fine-tuned from "
                f"{base.path}? (vocabulary resized or another size of the model?)"
            )
        plans.append(
            TensorPlan(name, "body" if base_name else "no_base", info.shape, info.dtype, base_name)
        )
    check_counterparts(arch, base, first, no_base, [p for p in plans if p.kind != "constant"])
    return plans, no_base


def no_base_note(config: MergeConfig, names: list[str]) -> str:
    """What happens to the tensors the base lacks, for the warning and the model card."""
    method = METHODS[config.merge_method]
    head = f"the base has no {', '.join(names)}: "
    if not method.uses_base:
        how = "the weighted mean of the models"
        if method.kernel == "regmean":
            how = "linear weights by RegMean's solve, the others as the weighted mean"
        return head + (
            f"{config.merge_method} reads no base, so they are merged like every other tensor "
            f"({how})"
        )
    if config.no_base == "method":
        return head + (
            f"{config.merge_method} runs on them with the models' plain mean as their base "
            "(no_base: method)"
        )
    return head + (
        "those tensors have no task vector and are merged as the plain (unweighted) mean of the "
        f"models (no_base: mean; `no_base: method` runs {config.merge_method} on them with that "
        "mean as their base, as mergekit does on `hm3 expand` output)"
    )
