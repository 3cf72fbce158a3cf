"""What a search space's extremes allow, checked before any trial runs.

A trial takes each parameter from its ``search:`` range, else from the merge YAML. A value that
cannot merge would fail that trial after others ran, so :func:`check_extremes` refuses up front
what the ranges' ends decide, in one line naming the keys and the fix:

- DELLA (``della``, ``della_linear``): density ± epsilon inside (0, 1) for every density below
  1 (the rule of :func:`hm3.methods.params.check_model_params`);
- ``normalize`` without sign consensus (``linear``, ``task_arithmetic``, ``dare_linear``, …):
  the weights cannot sum to zero; with consensus: they cannot all be 0 at once;
- RegMean and TSV: every weight > 0.

It also warns when a DARE or DELLA method would run with density 1 (neither searched nor set):
nothing is dropped and the seed changes nothing. What only some points of a range cannot merge
(a lambda so large that the merge overflows) is left to the trial, which
:meth:`hm3.search.objective.Material.objective` skips without counting it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hm3.errors import Hm3Error
from hm3.methods import METHODS, ModelParams
from hm3.methods.method import MergeMethod

if TYPE_CHECKING:
    from hm3.merging.config import MergeConfig
    from hm3.search.space import SearchSpace

log = logging.getLogger("hm3")

#: how many sums of chosen weights are enumerated before their range stands for them
_MAX_SUMS = 10_000
_TOL = 1e-8  # MergeConfig's "sum to zero"


@dataclass(frozen=True)
class Spread:
    """The values one model's parameter can take: a few ``points``, or all of [low, high]."""

    low: float
    high: float
    points: tuple[float, ...] | None
    where: str  # for messages: "search.density Uniform(0.1, 0.9)" or "epsilon 0.15 (default)"
    searched: bool = False  # from a range of the space (else the YAML's value)
    shared: bool = False  # one searched value for every model


def spreads(space: SearchSpace, config: MergeConfig, name: str, declared: bool) -> list[Spread]:
    """Per model, the values ``name`` can take in a trial (searched, else the YAML's)."""
    rng = space.ranges().get(name)
    if rng is not None:
        low, high = rng.extent()
        where = f"search.{name} {rng.describe()}" if declared else \
            f"{name} {rng.describe()} (the default search space)"  # fmt: skip
        where += " per model" if rng.per_model else ""
        spread = Spread(low, high, rng.choices, where, True, not rng.per_model)
        return [spread] * len(config.models)
    out = []
    top = config.parameters.model_defaults().get(name)
    for i, entry in enumerate(config.models):
        own = entry.parameters.given().get(name)
        value, at = (own, f"models[{i}].parameters") if own is not None else (top, "parameters")
        if value is None:
            value, at = getattr(ModelParams(), name), "default"
        out.append(Spread(value, value, (value,), f"{name} {value:g} ({at})"))
    return out


def check_extremes(space: SearchSpace, config: MergeConfig, source: str, declared: bool) -> None:
    """Refuse ranges whose ends some searched method cannot merge; warn when DARE drops nothing.

    Raises:
        Hm3Error: one line naming the ``search:`` keys (or YAML values) and the fix.
    """

    def get(name: str) -> list[Spread]:
        return spreads(space, config, name, declared)

    methods = [METHODS[m] for m in space.methods(config.merge_method)]
    for method in methods:
        if method.sparsification == "della_magprune":
            for density, epsilon in zip(get("density"), get("epsilon"), strict=True):
                _della(method.name, density, epsilon, source, declared)
        normalize = config.parameters.normalize  # kept by a trial when its method reads it
        if normalize is None or "normalize" not in method.global_parameters:
            normalize = method.default_normalize
        _weights(method, get("weight"), normalize, source)
    _warn_density_one([m for m in methods if m.is_random], space, config)


def _della(method: str, density: Spread, epsilon: Spread, source: str, declared: bool) -> None:
    """density ± epsilon inside (0, 1) for every density below 1 (density 1 prunes nothing)."""
    if density.points is not None:
        below = [d for d in density.points if d < 1]
        if not below:
            return
        low, high, near_one = min(below), max(below), False
    else:
        low, high, near_one = density.low, density.high, density.high >= 1
    e = epsilon.high
    if low - e > 0 and high + e < 1 and not near_one:
        return
    if low - e <= 0:
        bad = f"density {low:g} − epsilon {e:g} ≤ 0"
    else:
        bad = f"density {'near 1' if near_one else f'{high:g}'} + epsilon {e:g} ≥ 1"
    fixes = [] if near_one else [f"epsilon below {min(low, 1 - high):g}"]
    if e < 0.5:
        a, b = math.ceil(100 * e + 1) / 100, math.floor(100 * (1 - e) - 1) / 100
        block = f" (a search: block, e.g. `search: {{density: {{uniform: [{a:g}, {b:g}]}}}}`)"
        fixes.insert(0, f"density inside ({e:g}, {1 - e:g})" + block * (not declared))
    raise Hm3Error(
        f"{source}: {density.where} with {epsilon.where}: {method} needs density ± epsilon "
        f"inside (0, 1) for a density below 1, but {bad}; keep {' or '.join(fixes)}"
    )


def _weights(method: MergeMethod, weights: list[Spread], normalize: bool, source: str) -> None:
    """Weights > 0 (RegMean, TSV); with ``normalize``, no zero sum (or, with consensus, not all
    zero at once)."""
    where = weights[0].where if weights[0].searched else "the YAML's weights"
    low = min(weights, key=lambda w: w.low)
    if method.needs_positive_weights and low.low <= 0:
        raise Hm3Error(
            f"{source}: {low.where} reaches {low.low:g}, but {method.name} weights scale each "
            "model's share of the merge and must be > 0; give a range above 0, e.g. "
            "`weight: {log_uniform: [0.25, 4]}`"
        )
    if not normalize:
        return
    if method.consensus is None and _can_sum_to_zero(weights):
        raise Hm3Error(
            f"{source}: {where}: the model weights can sum to zero, but merge_method "
            f"{method.name} divides by their sum; keep the weights above 0 (e.g. `weight: "
            "{log_uniform: [0.25, 4], per_model: true}`) or set `normalize: false` in parameters:"
        )
    if all(w.points is not None and any(abs(p) < _TOL for p in w.points) for w in weights):
        raise Hm3Error(
            f"{source}: {where}: every model's weight can be 0 at once, which merge_method "
            f"{method.name} cannot merge; remove 0 from the choices"
        )


def _can_sum_to_zero(weights: list[Spread]) -> bool:
    """Whether one value per model (one for all when shared) can sum to zero (within 1e-8)."""
    if weights[0].shared:  # n · w = 0 only at w = 0
        weights = weights[:1]
    sums, low, high = {0.0}, 0.0, 0.0
    for w in weights:
        if w.points is None:
            low, high = low + w.low, high + w.high
            continue
        sums = {s + p for s in sums for p in w.points}
        if len(sums) > _MAX_SUMS:  # too many to list: their range stands for them
            low, high, sums = low + min(sums), high + max(sums), {0.0}
    return any(low - _TOL < -s < high + _TOL for s in sums)


def _warn_density_one(methods: list[MergeMethod], space: SearchSpace, config: MergeConfig) -> None:
    """One warning line when a DARE or DELLA method would keep every entry (density 1)."""
    if not methods or "density" in space.ranges():
        return
    top = config.parameters.density is not None
    unset = [i for i, m in enumerate(config.models) if not top and m.parameters.density is None]
    if not unset:
        return
    which = "" if len(unset) == len(config.models) else " for " + ", ".join(
        f"models[{i}]" for i in unset)  # fmt: skip
    kinds = sorted({"DELLA" if m.sparsification == "della_magprune" else "DARE" for m in methods})
    log.warning(
        "%s with density 1 (neither searched nor set%s): %s drop%s nothing; add density to "
        "search: or parameters:", ", ".join(m.name for m in methods), which,
        " and ".join(kinds), "" if len(kinds) > 1 else "s",
    )  # fmt: skip
