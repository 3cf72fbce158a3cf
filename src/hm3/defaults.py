"""Defaults that the command line shows in its help, kept free of heavy imports (no torch)."""

from __future__ import annotations

# ``ridge="auto"``: each task's ridge chosen by generalised cross-validation (hm3.alignment.fit).
AUTO_RIDGE = "auto"
# The ridge of head alignment (see hm3.alignment.fit). benchmarks/align_ablation.py on the demo zoo
# (data v2, 9 merges x 7 text sets; benchmarks/RESULTS.md, "Alignment ridge by generalised
# cross-validation"): "auto" is at or ahead of every fixed ridge on the text sets that cover
# the merged tasks (mean gap to the originals -0.008 with 1,000 covering texts, against -0.009
# for 0.01 and -0.014 for 0.03, the fixed default before it), and it needs no per-method advice
# (DARE-TIES merges of many tasks want a small ridge; few texts want a large one).
DEFAULT_RIDGE: float | str = AUTO_RIDGE
# ``scale="auto"``: the merged body's task vector scaled by the factor of hm3.alignment.scale's grid
# with the lowest cross-validation score; 1 keeps the merged body as it is.
AUTO_SCALE = "auto"
DEFAULT_SCALE: float | str = 1.0
# A fixed ridge, for callers that need one number: 0.03 was the default before "auto" and is
# within noise of the best fixed ridge on average.
FIXED_RIDGE = 0.03


def ridge_label(ridge: float | str) -> str:
    """How reports and messages name a ridge: ``0.03``, or ``auto: GCV per task``."""
    return f"{AUTO_RIDGE}: GCV per task" if ridge == AUTO_RIDGE else f"{ridge:g}"
