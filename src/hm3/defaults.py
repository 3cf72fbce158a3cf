"""Defaults that the command line shows in its help, kept free of heavy imports (no torch),
and the rule each of the alignment's two tunables follows (:func:`ridge_or_auto`,
:func:`scale_or_auto`: :func:`hm3.options.number_or_auto` with their bounds and defaults)."""

from __future__ import annotations

from typing import Any

from hm3.options import AUTO, number_or_auto

# ``ridge="auto"``: each task's ridge chosen by generalised cross-validation (hm3.alignment.fit).
AUTO_RIDGE = AUTO
# The ridge of head alignment (hm3.alignment.fit): "auto" is at or ahead of every fixed ridge and
# needs no per-method advice (docs/results/alignment.md, "The ridge: auto").
DEFAULT_RIDGE: float | str = AUTO_RIDGE
# ``scale="auto"``: the merged body's task vector scaled by the factor of hm3.alignment.scale's grid
# with the lowest cross-validation score; 1 keeps the merged body as it is.
AUTO_SCALE = AUTO
DEFAULT_SCALE: float | str = 1.0
# A fixed ridge, for callers that need one number: within noise of the best fixed ridge on
# average (docs/results/alignment.md).
FIXED_RIDGE = 0.03


def ridge_or_auto(value: Any, name: str | None = "--ridge") -> float | str:
    """A ridge: a finite number >= 0, or ``auto``; ``None`` gives :data:`DEFAULT_RIDGE`.

    ``name`` is the flag or key named in the error (``None``: for a pydantic validator).
    """
    return number_or_auto(value, name, default=DEFAULT_RIDGE)


def scale_or_auto(value: Any, name: str | None = "--scale") -> float | str:
    """A body scale: a finite number > 0 (1 keeps the merged body), or ``auto``; ``None`` gives
    :data:`DEFAULT_SCALE`."""
    return number_or_auto(value, name, strict=True, default=DEFAULT_SCALE)


def ridge_label(ridge: float | str) -> str:
    """How reports and messages name a ridge: ``0.03``, or ``auto: GCV per task``."""
    return f"{AUTO_RIDGE}: GCV per task" if ridge == AUTO_RIDGE else f"{ridge:g}"
