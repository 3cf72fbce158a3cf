"""HM3 expansion (paper, Algorithm 1) on tensors.

Model *i*'s label projection, ``K_i`` rows, is placed at rows ``[start, start + K_i)`` of a
``K = Σ K_j`` row projection with zeros elsewhere (eq. 5); the base model gets an all-zero
projection of the same shape (Alg. 1, line 10). Rows are labels, so this works for the
weight ``[K_i, H]`` and the bias ``[K_i]`` alike. Pure tensor code: no I/O.
"""

from __future__ import annotations

import torch


def expand_rows(tensor: torch.Tensor, start: int, total: int) -> torch.Tensor:
    """Zero-pad a label projection tensor to the concatenated label space.

    Args:
        tensor: task *i*'s projection weight ``[K_i, H]`` or bias ``[K_i]``.
        start: first row of task *i*'s segment (``K_before`` in Alg. 1, line 5).
        total: ``K``, the number of labels of all tasks together (Alg. 1, line 9).

    Returns:
        ``[K, ...]`` tensor: ``K_before`` zero rows, the task's rows, ``K_after`` zero rows
        (Alg. 1, line 7).
    """
    rows = tensor.shape[0]
    if start < 0 or start + rows > total:
        raise ValueError(f"segment [{start}, {start + rows}) does not fit in {total} labels")
    out = tensor.new_zeros((total, *tensor.shape[1:]))
    out[start : start + rows] = tensor
    return out


def zero_rows(like: torch.Tensor, total: int) -> torch.Tensor:
    """The HM3 base projection: zeros of shape ``[K, ...]`` (Alg. 1, line 10)."""
    return like.new_zeros((total, *like.shape[1:]))


def segment(tensor: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Task rows ``[start, end)`` of an expanded projection (the inverse of :func:`expand_rows`)."""
    return tensor[start:end]
