"""Typed parameters of the merge methods, and their validation.

What it does: defines :class:`ModelParams` (one per merged model) and :class:`MergeOptions`
(one per merge), the names of the sparsification and consensus variants, and the checks that
reject out-of-range values with a message naming the parameter, its value and the fix.
What it does not: parse configs or know method names beyond what a caller passes in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from hm3.errors import Hm3Error

Sparsification = Literal["magnitude", "random", "magnitude_outliers", "della_magprune"]
Consensus = Literal["sum", "count"]

#: sparsification variants that draw a random mask (and so need a generator)
RANDOM_SPARSIFICATIONS: frozenset[str] = frozenset({"random", "della_magprune"})


@dataclass(frozen=True)
class ModelParams:
    """Per-model parameters (mergekit's per-model ``parameters:``).

    Attributes:
        weight: scale of the model's task vector (any finite number; negative subtracts it).
        density: fraction of the task vector kept by sparsification, in (0, 1].
        gamma: breadcrumbs only: fraction of the largest-magnitude entries removed, in [0, 1).
        epsilon: DELLA only: half-width of the keep-probability range around ``density``.
    """

    weight: float = 1.0
    density: float = 1.0
    gamma: float = 0.01
    epsilon: float = 0.15


@dataclass(frozen=True)
class MergeOptions:
    """Per-merge options (mergekit's top-level ``parameters:``).

    Attributes:
        normalize: divide by the summed weights; ``None`` means the method's default.
        rescale: L1-rescale each sparsified task vector; ``None`` means the method's default.
        lambda_: scale of the merged task vector (mergekit's ``lambda``).
        alpha: RegMean only: off-diagonal scale of the Gram matrices; ``None`` means 0.9.
    """

    normalize: bool | None = None
    rescale: bool | None = None
    lambda_: float = 1.0
    alpha: float | None = None


#: the options a merge uses when none are given (method defaults, lambda 1)
DEFAULT_OPTIONS = MergeOptions()


def _fail(name: str, value: object, expected: str, fix: str) -> Hm3Error:
    return Hm3Error(f"{name} = {value!r}: expected {expected}; {fix}")


def check_model_params(
    method: str,
    params: Sequence[ModelParams],
    used: frozenset[str],
    sparsification: Sparsification | None,
) -> None:
    """Reject per-model values a method cannot use.

    Args:
        method: the merge method's name, for the messages.
        params: one entry per model, in model order.
        used: the parameter names the method reads (only those are checked).
        sparsification: the method's sparsification variant, or ``None``.

    Returns:
        None. Raises :class:`~hm3.errors.Hm3Error` (a ``ValueError``) on the first bad value.
    """
    for i, p in enumerate(params):
        where = f"models[{i}].parameters"
        if not math.isfinite(p.weight):
            raise _fail(f"{where}.weight", p.weight, "a finite number", "give a finite weight")
        if "density" in used and not 0.0 < p.density <= 1.0:
            raise _fail(
                f"{where}.density",
                p.density,
                "a number in (0, 1] (the fraction of the task vector kept)",
                "set density to a value in (0, 1], e.g. 0.5",
            )
        if "gamma" in used and not 0.0 <= p.gamma < 1.0:
            raise _fail(
                f"{where}.gamma",
                p.gamma,
                "a number in [0, 1) (the fraction of the largest entries removed)",
                "set gamma to a value in [0, 1), e.g. 0.01",
            )
        if "epsilon" in used and sparsification == "della_magprune":
            _check_della(method, where, p)


def _check_della(method: str, where: str, p: ModelParams) -> None:
    if p.density >= 1.0:
        return  # no pruning, epsilon unused
    if not (p.epsilon >= 0.0 and p.density - p.epsilon > 0.0 and p.density + p.epsilon < 1.0):
        raise _fail(
            f"{where}.epsilon",
            p.epsilon,
            f"epsilon >= 0 with density ± epsilon inside (0, 1) for {method} "
            f"(density = {p.density})",
            f"choose epsilon in [0, {min(p.density, 1.0 - p.density):g})",
        )


def check_generators(
    method: str,
    params: Sequence[ModelParams],
    generators: Sequence[torch.Generator | None] | None,
    device: torch.device,
) -> None:
    """Require a generator on ``device`` for every model that draws a random mask.

    Args:
        method: the merge method's name, for the messages.
        params: one entry per model; a model draws when its density is below 1.
        generators: the caller's generators, one per model, or ``None``.
        device: the device of the tensors being merged.

    Returns:
        None. Raises :class:`~hm3.errors.Hm3Error` when a needed generator is missing.
    """
    if generators is not None and len(generators) != len(params):
        raise _fail(
            "generators",
            f"<{len(generators)} generators>",
            f"one per model ({len(params)})",
            "pass one seeded torch.Generator per model, in model order",
        )
    for i, p in enumerate(params):
        if p.density >= 1.0:
            continue
        gen = None if generators is None else generators[i]
        if gen is None:
            raise _fail(
                f"generators[{i}]",
                None,
                f"a torch.Generator: {method} draws a random mask for "
                f"model {i} (density = {p.density})",
                "pass one seeded torch.Generator per model",
            )
        if gen.device.type != device.type:
            raise _fail(
                f"generators[{i}]",
                f"<generator on {gen.device}>",
                f"a generator on {device}",
                f"create it with torch.Generator(device={str(device)!r})",
            )
