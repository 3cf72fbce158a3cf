"""Do two merged models agree? Tensor-by-tensor comparison for ``merge_speed.py``.

What it does: compares every tensor the two output directories share (max |a − b|), lists
tensor names only one of them has, and excuses entries where TIES's trim is decided by an
exact tie: mergekit 0.1.5 trims with an unstable ``argsort``, hm3 breaks ties in |τ| by
position, so when several entries of one task vector tie exactly at the trim threshold (likely
in a tensor of millions of float32 values) the tools may keep different ones. Each differing
entry is checked against the HM3-expanded inputs; only those on such a tie are excused.
What it does not: time anything, or run either tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open


@dataclass(frozen=True)
class Agreement:
    """Largest |hm3 − mergekit| off trim ties, entries on ties, names compared / unmatched."""

    max_diff: float
    tied_entries: int
    compared: list[str]
    unmatched: list[str]

    def ok(self, tolerance: float) -> bool:
        return self.max_diff <= tolerance and not self.unmatched and bool(self.compared)


def agreement(a_dir: Path, b_dir: Path, expanded: Path, density: float, tol: float) -> Agreement:
    """Compare the merged models in ``a_dir`` and ``b_dir`` (``ties`` at ``density``).

    Args:
        a_dir, b_dir: the two output directories (``*.safetensors``, any sharding).
        expanded: ``hm3 expand``'s output (``base/``, ``models/<task>/``), to explain ties.
        density: the TIES density both merges used.
        tol: differences up to this are agreement.

    Returns:
        An :class:`Agreement`.
    """
    a_files, b_files = _index(a_dir), _index(b_dir)
    shared = sorted(a_files.keys() & b_files.keys())
    worst, tied = 0.0, 0
    for name in shared:
        a, b = _tensor(a_files[name], name).double(), _tensor(b_files[name], name).double()
        if a.shape != b.shape:
            return Agreement(float("inf"), 0, shared, [f"{name}: shapes differ"])
        diff = (a - b).abs()
        far = diff > tol
        if bool(far.any()):
            excused = far & _on_trim_ties(expanded, name, density)
            tied += int(excused.sum())
            diff[excused] = 0.0
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return Agreement(worst, tied, shared, sorted(a_files.keys() ^ b_files.keys()))


def _index(path: Path) -> dict[str, Path]:
    names = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, "pt") as fh:
            names.update(dict.fromkeys(fh.keys(), file))
    return names


def _tensor(file: Path, name: str) -> torch.Tensor:
    with safe_open(file, "pt") as fh:
        return fh.get_tensor(name)


def _on_trim_ties(expanded: Path, name: str, density: float) -> torch.Tensor:
    """Where some model's |τ| equals its trim threshold and more than one entry has it."""
    base = _tensor(expanded / "base" / "model.safetensors", name)
    tied = torch.zeros(base.shape, dtype=torch.bool)
    for model in sorted((expanded / "models").iterdir()):  # τ in float32, as both tools have it
        tau = (_tensor(model / "model.safetensors", name) - base).abs()
        k = max(1, int(density * tau.numel()))
        threshold = torch.topk(tau.reshape(-1), k).values.min()
        on_threshold = tau == threshold
        if int(on_threshold.sum()) > 1:
            tied |= on_threshold
    return tied
