"""Defaults that the command line shows in its help, kept free of heavy imports (no torch)."""

from __future__ import annotations

# Relative ridge strength of head alignment (see hm3.align_fit), chosen by
# benchmarks/align_ablation.py on the demo zoo: 0.01-0.1 are within noise on average, 0.03 is
# best or within 0.001 of best from 200 texts up, and DARE-TIES merges need a small ridge
# (benchmarks/RESULTS.md, "Head alignment ablation").
DEFAULT_RIDGE = 0.03
# ``ridge="auto"``: each task's ridge chosen by generalised cross-validation (hm3.align_fit).
AUTO_RIDGE = "auto"


def ridge_label(ridge: float | str) -> str:
    """How reports and messages name a ridge: ``0.03``, or ``auto (GCV per task)``."""
    return f"{AUTO_RIDGE} (GCV per task)" if ridge == AUTO_RIDGE else f"{ridge:g}"
