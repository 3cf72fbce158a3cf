"""Markdown tables of ``align_ablation.py``'s results (the JSON it writes, as dicts).

:func:`case_table`: one case study, rows text set / ridge, columns methods, average macro-F1;
``*`` marks a value at or above the originals' average. :func:`summary_table`: over every
(case, method), per text set and ridge, the mean gap to the originals' average and how many
merges reach it. Formatting only: it computes no metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _cell(value: float, target: float) -> str:
    return f"{value:.3f}{'*' if value >= target - 1e-12 else ''}"


def _ridge(ridge: float | str) -> str:
    return ridge if isinstance(ridge, str) else f"{ridge:g}"


def case_table(case: dict, ridges: Sequence[float]) -> str:
    """Average macro-F1 of one case: reference rows, then every text set × ridge."""
    methods = list(case["methods"])
    target = case["originals"]["average"]
    lines = [
        "| text set | ridge | " + " | ".join(methods) + " |",
        "|---|---:|" + "---:|" * len(methods),
        f"| originals | – | {' | '.join(f'{target:.3f}' for _ in methods)} |",
    ]
    merged = [_cell(case["methods"][m]["merged"]["average"], target) for m in methods]
    lines.append(f"| merged, not aligned | – | {' | '.join(merged)} |")
    for label in case["text_sets"]:
        for ridge in ridges:
            cells = [
                _cell(case["methods"][m]["aligned"][label]["ridges"][str(ridge)]["average"], target)
                for m in methods
            ]
            lines.append(f"| {label} | {_ridge(ridge)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _kind(label: str) -> str:
    """A text set's label without the case-specific task name (``one:spam 200`` → ``one 200``)."""
    head, _, rest = label.partition(" ")
    return f"{head.partition(':')[0]} {rest}".strip()


def _gaps(results: dict, ridges: Sequence[float]) -> dict[str, dict[str, list[float]]]:
    """Per text-set kind and ridge (``-`` for the unaligned merge): aligned − originals."""
    gaps: dict[str, dict[str, list[float]]] = {"merged, not aligned": {"-": []}}
    for case in results.values():
        target = case["originals"]["average"]
        for method in case["methods"].values():
            gaps["merged, not aligned"]["-"].append(method["merged"]["average"] - target)
            for label, row in method["aligned"].items():
                per_ridge = gaps.setdefault(_kind(label), {})
                for ridge in ridges:
                    value = row["ridges"][str(ridge)]["average"] - target
                    per_ridge.setdefault(str(ridge), []).append(value)
    return gaps


def summary_table(results: dict, ridges: Sequence[float]) -> str:
    """Mean (aligned − originals) average F1 over cases × methods; (merges reaching it / all)."""
    gaps = _gaps(results, ridges)
    lines = [
        "| text set | " + " | ".join(f"ridge {_ridge(r)}" for r in ridges) + " |",
        "|---|" + "---:|" * len(ridges),
    ]
    for kind, per_ridge in gaps.items():
        cells = []
        for ridge in ridges:
            values = per_ridge.get(str(ridge), per_ridge.get("-"))
            if values is None:
                cells.append("")
                continue
            reached = sum(v >= -1e-12 for v in values)
            cells.append(f"{np.mean(values):+.3f} ({reached}/{len(values)})")
        if kind == "merged, not aligned":
            cells = [cells[0]] + [""] * (len(cells) - 1)
        lines.append(f"| {kind} | {' | '.join(cells)} |")
    return "\n".join(lines)
