"""The search space of ``hm3 search``: the ``search:`` block of a merge YAML, validated up front.

A merge YAML may carry a ``search:`` block beside the usual keys (and ``align.scale`` may be a
range instead of a number)::

    search:
      density: {beta: [1.2, 2]}                    # one value shared by all models
      weight: {log_uniform: [0.25, 4], per_model: true}
      merge_method: [dare_ties, ties, tsv]         # categorical
      lambda: {uniform: [0.8, 1.6]}
    align:
      texts: unlabeled.jsonl
      scale: {uniform: [0.5, 2]}                   # the body scale becomes a searched parameter

Parameters: ``density``, ``weight``, ``gamma``, ``epsilon`` (per model with ``per_model: true``,
else one value for all), ``lambda``, ``merge_method`` (a list of methods) and ``scale``. A
range is ``{beta: [a, b]}``, ``{uniform: [lo, hi]}``, ``{log_uniform: [lo, hi]}`` or a list of
values (each once). Without a ``search:`` block the space is the paper's (Algorithm 3): one
density for all models from Beta(1.2, 2), everything else as the YAML says; a block replaces
it (a parameter it does not name keeps the YAML's value). :func:`check_space` refuses a space
that searches nothing (:mod:`hm3.search.feasible` then refuses ranges whose ends cannot merge).

The ``search:`` block is parsed beside :class:`~hm3.merging.config.MergeConfig` (which stays the
plain, re-runnable recipe: a trial's config is a MergeConfig without any range). Errors are
the merge YAML's one-line "where: expected, found, fix" messages. Sampling lives in
:mod:`hm3.search.trial`; this module draws nothing.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hm3.errors import Hm3Error
from hm3.io.yaml_input import did_you_mean, format_validation_error
from hm3.merging.config import MergeConfig
from hm3.methods import METHODS

_FROZEN = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
#: where each parameter's values must lie: (low, high, low inclusive, high inclusive)
BOUNDS = {
    "density": (0.0, 1.0, False, True),
    "gamma": (0.0, 1.0, True, False),
    "epsilon": (0.0, 1.0, False, False),
    "weight": (-math.inf, math.inf, False, False),
    "lambda": (-math.inf, math.inf, False, False),
    "scale": (0.0, math.inf, False, False),
}
PER_MODEL = ("density", "weight", "gamma", "epsilon")
#: the paper's prior of the DARE-TIES density (Algorithm 3)
PAPER_DENSITY = (1.2, 2.0)
#: a block to suggest when none searches anything (every method reads weight)
_EXAMPLE = "{weight: {log_uniform: [0.25, 4], per_model: true}}"


class Range(BaseModel):
    """One searched number: exactly one of ``beta``, ``uniform``, ``log_uniform``, ``choices``."""

    model_config = _FROZEN

    beta: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    choices: tuple[float, ...] | None = Field(default=None, min_length=1)
    per_model: bool = False

    @model_validator(mode="after")
    def _one(self) -> Range:
        given = [k for k in ("beta", "uniform", "log_uniform", "choices") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of beta: [a, b], uniform: [lo, hi], log_uniform: [lo, hi] "
                f"or a list of values (found {', '.join(given) or 'none'})"
            )
        if self.beta is not None and not all(v > 0 and math.isfinite(v) for v in self.beta):
            raise ValueError(f"beta: [{self.beta[0]:g}, {self.beta[1]:g}]: a and b must be > 0")
        for kind in ("uniform", "log_uniform"):
            pair = getattr(self, kind)
            if pair is None:
                continue
            lo, hi = pair
            if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
                raise ValueError(
                    f"{kind}: [{lo:g}, {hi:g}] is an empty range; expected [low, high] with "
                    "low < high"
                )
            if kind == "log_uniform" and lo <= 0:
                raise ValueError(f"log_uniform: [{lo:g}, {hi:g}]: expected low > 0")
        twice = _repeated(self.choices or ())
        if twice is not None:
            raise ValueError(f"{twice:g} is listed twice; list each value once")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("beta", "uniform", "log_uniform", "choices") if getattr(self, k))

    def extent(self) -> tuple[float, float]:
        """The smallest and largest value the range can give."""
        if self.beta is not None:
            return (0.0, 1.0)
        if self.choices is not None:
            return (min(self.choices), max(self.choices))
        return self.uniform or self.log_uniform  # type: ignore[return-value]

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(f"{c:g}" for c in self.choices)
        a, b = getattr(self, self.kind)
        name = {"beta": "Beta", "uniform": "Uniform", "log_uniform": "LogUniform"}[self.kind]
        return f"{name}({a:g}, {b:g})"


def _repeated(values: Any) -> Any:
    """The first value that occurs twice in ``values`` (``None`` when all differ)."""
    seen: list[Any] = []
    for value in values:
        if value in seen:
            return value
        seen.append(value)
    return None


def _as_range(value: Any) -> Any:
    """A list of values is a categorical range."""
    return {"choices": value} if isinstance(value, list | tuple) else value


class SearchSpace(BaseModel):
    """The searched parameters; unset ones keep the YAML's value."""

    model_config = _FROZEN

    density: Range | None = None
    weight: Range | None = None
    gamma: Range | None = None
    epsilon: Range | None = None
    lambda_: Range | None = Field(default=None, alias="lambda")
    scale: Range | None = None
    merge_method: tuple[str, ...] | None = Field(default=None, min_length=1)

    _ranges = field_validator("density", "weight", "gamma", "epsilon", "lambda_", "scale",
                              mode="before")(_as_range)  # fmt: skip

    @field_validator("merge_method", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        for name in names if isinstance(names, list | tuple) else ():
            if name not in METHODS:
                raise ValueError(
                    f"unknown method {name!r}{did_you_mean(name, METHODS)}; expected a list of "
                    f"{', '.join(m for m in METHODS if m != 'regmean')}"
                )
            if name == "regmean":
                raise ValueError(
                    "regmean cannot be searched (it needs each model's Gram statistics); "
                    "remove it from the list"
                )
        twice = _repeated(names) if isinstance(names, list | tuple) else None
        if twice is not None:
            raise ValueError(f"{twice} is listed twice; list each method once")
        return names

    @model_validator(mode="after")
    def _bounds(self) -> SearchSpace:
        for name, rng in self.ranges().items():
            low, high, low_in, high_in = BOUNDS[name]
            a, b = rng.extent()
            below = a < low or (a == low and not low_in)
            above = b > high or (b == high and not high_in)
            if rng.beta is None and (below or above):  # Beta draws lie in (0, 1): inside all
                lo_b, hi_b = ("[" if low_in else "("), ("]" if high_in else ")")
                raise ValueError(
                    f"{name}: {rng.describe()} reaches outside {lo_b}{low:g}, {high:g}{hi_b}; "
                    f"give a range inside it"
                )
            if rng.per_model and name not in PER_MODEL:
                raise ValueError(f"{name}: per_model applies only to {', '.join(PER_MODEL)}")
        return self

    def ranges(self) -> dict[str, Range]:
        """Searched numeric parameters by their YAML name (``lambda``, not ``lambda_``)."""
        named = {
            "density": self.density, "weight": self.weight, "gamma": self.gamma,
            "epsilon": self.epsilon, "lambda": self.lambda_, "scale": self.scale,
        }  # fmt: skip
        return {k: v for k, v in named.items() if v is not None}

    def methods(self, default: str) -> tuple[str, ...]:
        return self.merge_method or (default,)


def split_search(data: dict[str, Any], source: str) -> tuple[dict[str, Any], SearchSpace, bool]:
    """Split a merge YAML mapping into the plain recipe and its search space.

    Returns:
        ``(recipe, space, declared)``: the mapping without ``search:`` (``align.scale`` set to 1
        when it was a range), the validated space, and whether a ``search:`` block was given
        (a null one is an empty block, refused by :func:`check_space`).

    Raises:
        Hm3Error: one line naming the file, the key and the fix.
    """
    recipe = dict(data)
    declared = "search" in recipe  # a null `search:` too
    block = recipe.pop("search", None)
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise Hm3Error(f"{source}: search: expected a mapping of parameter to range (found "
                       f"{type(block).__name__})")  # fmt: skip
    block = dict(block)
    if "align" in block:
        raise Hm3Error(f"{source}: search.align: align: is a block of its own, beside search: "
                       "(its scale may be a range); move it to the top level")  # fmt: skip
    align = recipe.get("align")
    if isinstance(align, dict) and isinstance(align.get("scale"), dict | list):
        if "scale" in block:
            raise Hm3Error(f"{source}: scale given both in align: and in search:; keep one")
        block["scale"] = align["scale"]
        recipe["align"] = {**align, "scale": 1.0}
        declared = True
    if "scale" in block and not isinstance(align, dict):
        raise Hm3Error(
            f"{source}: search.scale scales the body before head alignment; add an "
            "`align: {texts: FILE}` block or remove it"
        )
    try:
        space = SearchSpace.model_validate(block)
    except ValidationError as exc:
        raise Hm3Error(f"{source}: {format_validation_error(exc, SearchSpace, 'search')}") from None
    return recipe, space, declared


def paper_space() -> SearchSpace:
    """The paper's space: one density for all models from Beta(1.2, 2)."""
    return SearchSpace(density=Range(beta=PAPER_DENSITY))


def check_space(space: SearchSpace, config: MergeConfig, source: str, declared: bool) -> None:
    """Refuse a space that searches nothing, or what no method searched reads or can merge.

    Args:
        space: the ``search:`` block's space, or :func:`paper_space` when none was ``declared``.
        config: the recipe the trials start from (its method, each model's parameters).
        source: the file's name for messages.
        declared: whether the YAML has a ``search:`` block (or a ranged ``align.scale``).

    Raises:
        Hm3Error: one line naming the key and the fix. (The ranges' extremes are checked
        next, by :func:`hm3.search.feasible.check_extremes`.)
    """
    method = config.merge_method
    methods = [METHODS[m] for m in space.methods(method)]
    if any(m.kernel == "regmean" for m in methods):
        raise Hm3Error(
            f"{source}: merge_method regmean cannot be searched (it needs each model's Gram "
            "statistics); search another method"
        )
    if not declared and "density" not in METHODS[method].per_model_parameters:
        raise Hm3Error(
            f"{source}: merge_method {method}: the default search space is DARE-TIES's density, "
            f"which {method} does not use; add a search: block, e.g. `search: {_EXAMPLE}`"
        )
    if not space.ranges() and space.merge_method is None:
        paper = "density" in METHODS[method].per_model_parameters
        raise Hm3Error(
            f"{source}: search: is empty; name at least one parameter to search, e.g. "
            f"`search: {_EXAMPLE}`" + (", or remove it to search the paper's density" * paper)
        )
    for name in space.ranges():
        if name == "scale":
            continue
        used = [m.name for m in methods if name in m.per_model_parameters | m.global_parameters]
        if not used:
            raise Hm3Error(
                f"{source}: search.{name}: not used by merge_method "
                f"{', '.join(m.name for m in methods)}; remove it or search a method that uses it"
            )
    ranges = space.ranges().items()
    fixed = [f"{k}: [{r.choices[0]:g}]" for k, r in ranges if r.choices and len(r.choices) == 1]
    if len(methods) < 2 and len(fixed) == len(space.ranges()):
        items = [f"merge_method: {methods[0].name}"] * bool(space.merge_method) + fixed
        what = " and ".join(items) + (" has one value" if len(items) == 1 else " have one each")
        raise Hm3Error(
            f"{source}: search: nothing to search ({what}); list two methods or more, or give "
            f"a range, e.g. `search: {_EXAMPLE}`"
        )
