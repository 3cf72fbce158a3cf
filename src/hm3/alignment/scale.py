"""Scale a merged body's task vector before head alignment, chosen without labels.

A merge leaves every body tensor at ``θ = θ_base + Δ``. Aligned heads read the merged body's
features, and they read some merges better at another strength of the update
(``docs/results/scale.md``).
:class:`BodyScale` holds ``θ_base`` and ``Δ`` of every float body tensor that has a
counterpart in the base — not the label projection, and not a tensor the base lacks (a bare
RoBERTa's ``classifier.dense``), which carries no task vector — and sets a loaded model to
``θ(s) = θ_base + s·Δ``: ``s = 1`` is the merge as made, any other ``s`` multiplies the merge's
``lambda`` by ``s``. :func:`gcv_score` scores one ``s`` from the alignment's statistics on the
fitting texts: over tasks, the sum of the fit's generalised cross-validation error (at the
ridge alignment will use, or the lowest over the ridge grid with ``"auto"``) divided by the
variance of the original's logits. No labels and no gradient steps: one forward pass over the
texts per ``s`` of :data:`SCALE_GRID`.

It loads, scales and scores; the pass over the texts is :mod:`hm3.alignment.api`'s and writing is
:mod:`hm3.alignment.write`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hm3.alignment.fit import AUTO_RIDGES, RidgeStats
from hm3.defaults import AUTO_RIDGE, AUTO_SCALE
from hm3.errors import Hm3Error, spell
from hm3.io.checkpoint import Checkpoint, locate
from hm3.model.architectures import (
    Architecture,
    base_counterpart,
    resolve_architecture,
    with_body_prefix,
)
from hm3.model.features import Projection

# The scales tried with ``scale="auto"``: from half to twice the merge's update, which brackets
# the choices on the demo zoo (docs/results/scale.md).
SCALE_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def _base() -> str:
    """``--base DIR`` on the command line, ``base_model=DIR`` from Python."""
    return spell("--base DIR", "base_model=DIR")


def scales_for(scale: float | str) -> tuple[float, ...]:
    """The scales one pass over the texts runs: 1 always (the merged model's own error)."""
    if scale == AUTO_SCALE:
        return SCALE_GRID
    return (1.0,) if scale == 1 else (1.0, float(scale))


@dataclass
class BodyScale:
    """The base and the merge's update of every scalable body tensor, on the model's device."""

    base_model: str  # as given or recorded, for the metadata
    base: dict[str, torch.Tensor]  # stored tensor name → θ_base (float32)
    delta: dict[str, torch.Tensor]  # stored tensor name → θ_merged − θ_base (float32)

    def apply(self, model: torch.nn.Module, scale: float) -> None:
        """Set ``model``'s body tensors to ``θ_base + scale·Δ``, in place."""
        params = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, value in self.values(scale).items():
                params[name].copy_(value)

    def values(self, scale: float) -> dict[str, torch.Tensor]:
        """Every scaled body tensor at ``scale``, by stored name."""
        return {k: torch.add(b, self.delta[k], alpha=scale) for k, b in self.base.items()}


def load_body_scale(
    merged: Path,
    config: dict,
    projection: Projection,
    model: torch.nn.Module,
    base_model: str | Path | None,
    *,
    allow_pickle: bool = False,
) -> BodyScale:
    """Read the base and the merged body of ``merged`` (its parameters as loaded in ``model``).

    ``base_model`` defaults to the ``hm3.merge.base_model`` that the merge recorded.
    """
    recorded = ((config.get("hm3") or {}).get("merge") or {}).get("base_model")
    ref = str(base_model) if base_model is not None else recorded
    if not ref:
        scale = spell("--scale", "a scale other than 1")
        raise Hm3Error(
            f"{merged}: records no base model, and {scale} needs one; pass {_base()} with the "
            "model the merged classifiers were fine-tuned from"
        )
    params = model.state_dict(keep_vars=True)
    device = next(iter(params.values())).device
    base_dir = locate(ref, spell("base model (--base)", "base model (base_model)"))
    with (
        Checkpoint(base_dir, allow_pickle=allow_pickle, role="base model") as base,
        Checkpoint(merged, role="merged model") as ckpt,
    ):
        arch = resolve_architecture(config, str(merged), projection.tensors)
        arch = with_body_prefix(arch, ckpt.tensors, base.tensors)
        pairs = _counterparts(arch, ckpt, base, projection, params)
        if not pairs:
            raise Hm3Error(
                f"{base_dir}: shares no tensor with {merged} (same name up to a prefix like "
                f"`bert.`, same shape); pass {_base()} with the model the merge started from"
            )
        out = BodyScale(ref, {}, {})
        for name, base_name in pairs.items():
            b = base.get(base_name).to(device, torch.float32)
            out.base[name] = b
            out.delta[name] = params[name].detach().float() - b
    return out


def _counterparts(
    arch: Architecture,
    ckpt: Checkpoint,
    base: Checkpoint,
    projection: Projection,
    params: dict[str, torch.Tensor],
) -> dict[str, str]:
    """Stored name → base name, for every float tensor of the body that the base also has."""
    pairs = {}
    for name, info in ckpt.tensors.items():
        if name in projection.tensors or not info.dtype.is_floating_point or name not in params:
            continue
        base_name = base_counterpart(arch, base.tensors, name)
        if base_name is None:
            continue
        if base.tensors[base_name].shape != info.shape:
            raise Hm3Error(
                f"{base.label}: tensor {base_name} has shape {list(base.tensors[base_name].shape)}"
                f" but the merged model's {name} has {list(info.shape)}; pass {_base()} with "
                "the model the merge started from"
            )
        pairs[name] = base_name
    return pairs


def gcv_score(
    stats: RidgeStats,
    groups: Sequence[tuple[int, int]],
    ridge: float | str,
    *,
    intercept: bool,
) -> float:
    """Sum over task groups of the fit's GCV error over the variance of the original's logits.

    With ``ridge="auto"`` each group's lowest score over :data:`AUTO_RIDGES`, else its score at
    ``ridge`` (a fixed ridge of 0 is scored at the grid's smallest ridge).
    """
    ridges = AUTO_RIDGES if ridge == AUTO_RIDGE else (max(float(ridge), AUTO_RIDGES[0]),)
    scores = stats.gcv(groups, ridges, intercept=intercept).min(dim=1).values
    energy = stats.target_scatter()
    total = 0.0
    for (start, end), score in zip(groups, scores.tolist(), strict=True):
        spread = float(energy[start:end].sum()) / stats.n
        total += score / spread if spread > 0 else 0.0
    return total
