"""Which entries of a task vector to keep: exact rank selections and DELLA's probabilities.

What it does: order statistics in O(n) (numpy's introselect on CPU, ``torch.topk``'s radix
select elsewhere), a rank-window mask with ties broken by position (so exactly the requested
number of entries is kept), the TIES top-k and Breadcrumbs window masks built on it, and
DELLA's rank-scaled keep probabilities.
What it does not: modify task vectors, draw random numbers or rescale (see
:mod:`hm3.methods.sparsify`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def order_statistics(values: Tensor, ranks: Sequence[int]) -> list[float]:
    """Exact values at 0-based ascending ranks of a tensor, in O(n) (no full sort).

    Args:
        values: any floating tensor (read as flat).
        ranks: 0-based positions in ascending sorted order, each in [0, numel).

    Returns:
        The value found at each rank, as Python floats.
    """
    flat = values.detach().reshape(-1)
    if flat.device.type != "cpu":  # torch.topk is a radix select on GPUs; kthvalue is slow
        return [_topk_order_statistic(flat, r) for r in ranks]
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    part = flat.numpy().copy()
    found: dict[int, float] = {}
    offset = 0  # part[offset:] holds the ranks not yet placed, unordered
    for r in sorted(set(ranks)):  # one single-kth introselect per rank: numpy's fast path
        rest = part[offset:]
        rest.partition(r - offset)
        found[r] = float(rest[r - offset])
        offset = r + 1
    return [found[r] for r in ranks]


def _topk_order_statistic(flat: Tensor, rank: int) -> float:
    n = flat.numel()
    if rank >= n // 2:  # the n - rank largest hold ranks rank..n-1: take their minimum
        return float(torch.topk(flat, n - rank, sorted=False).values.min())
    return float(torch.topk(flat, rank + 1, largest=False, sorted=False).values.max())


def rank_window_mask(values: Tensor, start: int, stop: int) -> Tensor:
    """Mask of the entries whose ascending rank lies in ``[start, stop)``.

    Ties are ranked by position (earlier first), so the mask has exactly
    ``clip(stop) - clip(start)`` true entries.

    Args:
        values: floating tensor to rank (e.g. magnitudes |τ|).
        start: first rank kept (clipped to [0, numel]).
        stop: one past the last rank kept (clipped to [0, numel]).

    Returns:
        A bool tensor shaped like ``values``.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    start, stop = max(0, start), min(n, stop)
    if stop <= start:
        return torch.zeros_like(values, dtype=torch.bool)
    if start == 0 and stop == n:
        return torch.ones_like(values, dtype=torch.bool)
    if stop == n:  # a top-k: the upper bound is the maximum
        (lo,), hi = order_statistics(flat, [start]), None
        keep = flat >= lo
    else:
        lo, hi = order_statistics(flat, [start, stop - 1])
        keep = (flat >= lo) & (flat <= hi)
    if int(torch.count_nonzero(keep)) != stop - start:  # ties straddle a boundary
        keep = flat > lo if hi is None else (flat > lo) & (flat < hi)
        _keep_tied(keep, flat, lo, start, stop)
        if hi is not None and hi != lo:
            _keep_tied(keep, flat, hi, start, stop)
    return keep.view_as(values)


def _keep_tied(keep: Tensor, flat: Tensor, value: float, start: int, stop: int) -> None:
    below = int(torch.count_nonzero(flat < value))
    tied = torch.nonzero(flat == value).reshape(-1)  # ranks below + 0, below + 1, ...
    keep[tied[max(0, start - below) : max(0, stop - below)]] = True


def top_k_count(n: int, density: float) -> int:
    """TIES's k for n entries: max(1, ⌊density·n⌋), or n when density ≥ 1 (mergekit's rule).

    Args:
        n: number of entries (padded zeros included).
        density: fraction kept.

    Returns:
        How many entries the trim keeps.
    """
    return n if density >= 1 else max(1, int(density * n))


def outlier_window(n: int, density: float, gamma: float) -> tuple[int, int]:
    """Breadcrumbs' kept ranks [start, stop) in ascending |τ| order, mergekit's rule.

    ⌊density·n⌋ entries are kept after dropping the ⌊γ·n⌋ largest; when both do not fit,
    fewer large entries are dropped.

    Args:
        n: number of entries.
        density: fraction kept, in (0, 1).
        gamma: fraction of the largest entries dropped, in [0, 1).

    Returns:
        ``(start, stop)`` with ``stop - start = ⌊density·n⌋``.
    """
    kept, top = int(density * n), int(gamma * n)
    bottom = max(0, n - kept - top)
    return bottom, bottom + kept


def magnitude_mask(delta: Tensor, density: float) -> Tensor:
    """TIES step 1 (trim): keep the k = max(1, ⌊density·n⌋) largest |τ| entries.

    Args:
        delta: a task vector τ (any shape; padded zeros count as entries).
        density: fraction kept, in (0, 1]; 1 keeps everything.

    Returns:
        A bool mask shaped like ``delta`` with exactly k true entries.
    """
    n = delta.numel()
    return rank_window_mask(delta.abs(), n - top_k_count(n, density), n)


def outlier_mask(delta: Tensor, density: float, gamma: float) -> Tensor:
    """Breadcrumbs step 1: drop the ⌊γ·n⌋ largest |τ| and the smallest, keeping ⌊density·n⌋.

    Args:
        delta: a task vector τ.
        density: fraction kept, in (0, 1]; 1 keeps everything.
        gamma: fraction of the largest-magnitude entries removed, in [0, 1).

    Returns:
        A bool mask shaped like ``delta`` (see :func:`outlier_window` for the count).
    """
    if density >= 1:
        return torch.ones_like(delta, dtype=torch.bool)
    return rank_window_mask(delta.abs(), *outlier_window(delta.numel(), density, gamma))


def della_probabilities(
    delta: Tensor, density: float, epsilon: float, out: Tensor | None = None
) -> Tensor:
    """DELLA step 1 (MagPrune): keep probability of each entry from its magnitude rank.

    p = density − ε + 2ε · (r − 1)/(m − 1), with r the 1-based rank of |τ| along dim 1
    (a 0-D or 1-D τ is one row; like mergekit, ≥3-D tensors rank along dim 1) and m the row
    length; a row of one entry gets p = density.

    Args:
        delta: a task vector τ.
        density: mean keep probability, in (0, 1).
        epsilon: half-width of the probability range; density ± epsilon must lie in (0, 1).
        out: optional buffer of ``delta``'s size and dtype to write into (may not alias it).

    Returns:
        Probabilities shaped like ``delta``.
    """
    out = torch.empty_like(delta) if out is None else out.view_as(delta)
    rows = delta.reshape(1, -1) if delta.ndim < 2 else delta
    probs = out.view(rows.shape)
    m = rows.shape[1]
    if m == 1:  # mergekit divides 0 by 0 here and fails; the midpoint is the natural value
        return out.fill_(density)
    order = torch.argsort(torch.abs(rows, out=probs), dim=1)  # ascending magnitude
    shape = [1] * rows.ndim
    shape[1] = m
    ranks = torch.arange(m, dtype=probs.dtype, device=probs.device).add_(1).view(shape)
    probs.scatter_(1, order, ranks.expand_as(order))  # 1-based rank of each entry
    del order
    denom = torch.tensor(m, dtype=probs.dtype, device=probs.device) - 1
    probs.sub_(1).div_(denom).clamp_(0, 1)  # rank normalised to [0, 1]
    probs.mul_(2).mul_(epsilon).add_(density - epsilon)
    return out
