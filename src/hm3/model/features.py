"""The input of a classifier's label projection: which layer it is, and what it sees.

:func:`find_projection` names the label projection of a loaded classifier: from the family
table (:mod:`hm3.model.architectures`) when its ``model_type`` is known, else the model's only
``Linear`` layer with one output per label. :func:`features` runs a batch of texts and
returns what that layer received — captured with a forward pre-hook on the module that owns
the projection weight, so BERT's pooled output, RoBERTa's and ELECTRA's dense-tanh vector,
DistilBERT's ``pre_classifier`` output and DeBERTa's pooler output are all caught alike — and
the logits, both in text order. :func:`load_originals` loads each original classifier once and
:func:`original_logits` runs them on a batch.
It fits nothing and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hm3.errors import Hm3Error
from hm3.io.checkpoint import Checkpoint
from hm3.model.architectures import SUPPORTED
from hm3.model.classifier import Classifier, load
from hm3.model.labels import Task
from hm3.options import RunOptions


@dataclass(frozen=True)
class Original:
    """The original classifier of one task: where it is and which of its logits to use.

    :func:`hm3.alignment.originals.resolve_originals` finds and checks them.
    """

    task: str
    ref: str  # as recorded in the metadata: the path or hub id
    path: Path
    start: int  # the task's segment within the original's logits
    end: int


@dataclass(frozen=True)
class Projection:
    """The label projection of a model: its module and its tensors' names."""

    module: str
    weight: str
    bias: str | None

    @property
    def tensors(self) -> tuple[str, ...]:
        return (self.weight,) if self.bias is None else (self.weight, self.bias)


def find_projection(clf: Classifier, config: dict, source: str) -> Projection:
    """The label projection of a loaded classifier: by family, else its only label-sized Linear."""
    k = clf.tasks[-1].end
    arch = SUPPORTED.get(str(config.get("model_type", "")))
    if arch is not None:
        module = arch.projection_weight.rpartition(".")[0]
        found = Projection(module, arch.projection_weight, arch.projection_bias)
    else:
        linears = [
            name
            for name, m in clf.model.named_modules()
            if isinstance(m, torch.nn.Linear) and m.out_features == k
        ]
        if len(linears) != 1:
            raise Hm3Error(
                f"{source}: cannot tell which layer is the label projection of model_type "
                f"{config.get('model_type')!r} (supported: {', '.join(sorted(SUPPORTED))})"
            )
        bias = clf.model.get_submodule(linears[0]).bias is not None
        name = linears[0]
        found = Projection(name, f"{name}.weight", f"{name}.bias" if bias else None)
    with Checkpoint(Path(source), role="merged model") as ckpt:
        missing = [name for name in found.tensors if name not in ckpt.tensors]
    if missing:
        raise Hm3Error(
            f"{source}: no tensor {missing[0]} (the label projection); is it a classifier?"
        )
    return found


def features(
    clf: Classifier, module: torch.nn.Module, texts: list[str], projection: Projection
) -> tuple[torch.Tensor, torch.Tensor]:
    """The projection's input (captured by a forward pre-hook) and the logits, in text order."""
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        logits = clf.model(**clf.encode(texts)).logits
    finally:
        handle.remove()
    if len(captured) != 1 or captured[0].shape[:1] != (len(texts),) or captured[0].ndim != 2:
        shapes = [tuple(c.shape) for c in captured]
        raise Hm3Error(
            f"{clf.path}: the label projection {projection.module} did not see one vector per "
            f"text (inputs {shapes}); alignment supports heads that project one pooled vector"
        )
    return captured[0].float().cpu(), logits.float().cpu()


def load_originals(originals: dict[str, Original], options: RunOptions) -> dict[Path, Classifier]:
    """Each distinct original once (a model listed twice in a merge is run once)."""
    runners: dict[Path, Classifier] = {}
    for original in originals.values():
        key = original.path.resolve()
        if key not in runners:
            runners[key] = load(original.path, options=options)
    return runners


def original_logits(
    tasks: list[Task],
    originals: dict[str, Original],
    runners: dict[Path, Classifier],
    texts,
    only: set[str] | None = None,
) -> torch.Tensor:
    """Every task's original logits on a batch, in the merged model's label layout ``[n, K]``;
    with ``only``, those tasks' (the others' columns are 0: their originals do not run)."""
    y = torch.zeros(len(texts), tasks[-1].end, dtype=torch.float32)
    for task in tasks:
        if only is not None and task.name not in only:
            continue
        original = originals[task.name]
        theirs = runners[original.path.resolve()].logits(texts, batch_size=len(texts))
        y[:, task.start : task.end] = torch.from_numpy(theirs[:, original.start : original.end])
    return y
