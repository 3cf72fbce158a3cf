"""Generalized task arithmetic: the kernel behind task_arithmetic, TIES, DARE, Breadcrumbs, DELLA.

What it does: θ = θ_base + λ · combine_i(w_i · sparsify(θ_i − θ_base)), with an optional TIES
sign election and normalisation, exactly as mergekit 0.1.5's ``GeneralizedTaskArithmeticMerge``
(one stacked [n, ...] delta buffer, modified in place).
What it does not: validate parameters (done once in :meth:`hm3.methods.MergeMethod.merge`),
read checkpoints or cast to the output dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hm3.methods.params import Consensus, ModelParams, Sparsification
from hm3.methods.sparsify import sparsify_

#: mergekit's tolerance under which a summed weight counts as zero (no division then)
WEIGHT_SUM_EPS = 1e-8


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The dtype a merge computes in: float64 if any input is float64, else float32.

    Args:
        tensors: the inputs (``None`` entries are ignored).

    Returns:
        ``torch.float64`` or ``torch.float32``.
    """
    wide = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return torch.float64 if wide else torch.float32


def task_vectors(base: Tensor, tensors: Tensor, dtype: torch.dtype) -> Tensor:
    """Task arithmetic step 1: τ_i = θ_i − θ_base for every model, in one new buffer.

    Args:
        base: θ_base, shaped like one model's tensor.
        tensors: θ_i stacked as [n, *shape]; not modified.
        dtype: compute dtype of the result.

    Returns:
        A new [n, *shape] tensor of task vectors in ``dtype``.
    """
    base = base.to(dtype)
    if tensors.dtype == dtype:
        return torch.sub(tensors, base)
    return tensors.to(dtype).sub_(base)


def elected_sign(deltas: Tensor, method: Consensus = "sum") -> Tensor:
    """TIES step 2 (elect sign): the sign each entry of the merge takes, as ±1.

    ``sum``: sign(Σ_i δ_i) (TIES); ``count``: sign(#positive − #negative). A zero elects +1.

    Args:
        deltas: weighted task vectors δ_i = w_i τ̂_i stacked as [n, *shape].
        method: ``sum`` or ``count``.

    Returns:
        A new float tensor of +1/−1 shaped like one model's tensor.
    """
    if method == "sum":
        total = deltas.sum(dim=0)
    elif method == "count":
        total = torch.zeros_like(deltas[0])
        for delta in deltas:
            total.add_(torch.sign(delta))
    else:
        raise ValueError(f"consensus = {method!r}: expected 'sum' or 'count'")
    return total.ge_(0).mul_(2).sub_(1)


def consensus_mask(deltas: Tensor, method: Consensus = "sum") -> Tensor:
    """TIES step 2 (elect sign): which entries agree with the elected sign.

    A zero entry never agrees.

    Args:
        deltas: weighted task vectors δ_i = w_i τ̂_i stacked as [n, *shape].
        method: ``sum`` or ``count`` (see :func:`elected_sign`).

    Returns:
        A bool [n, *shape] mask: true where sign(δ_i) equals the elected sign.
    """
    return (deltas * elected_sign(deltas, method)) > 0


def generalized_task_arithmetic(
    base: Tensor,
    tensors: Tensor,
    params: Sequence[ModelParams],
    *,
    sparsification: Sparsification | None,
    consensus: Consensus | None,
    normalize: bool,
    rescale: bool,
    lambda_: float = 1.0,
    generators: Sequence[torch.Generator | None] | None = None,
) -> Tensor:
    """θ_base + λ · Σ_i m_i w_i τ̂_i / D, the generalized task arithmetic merge.

    τ̂_i = sparsify(θ_i − θ_base); m_i the sign-agreement mask (all ones without consensus);
    D = Σ_i m_i w_i per entry (0 → 1) with consensus, else Σ_i w_i (|Σ| < 1e-8 → 1);
    D = 1 when ``normalize`` is off.

    Args:
        base: θ_base, shaped like one model's tensor.
        tensors: θ_i stacked as [n, *shape]; not modified.
        params: per-model weight/density/gamma/epsilon, in model order.
        sparsification: sparsification variant, or ``None`` to keep every entry.
        consensus: ``sum``/``count`` sign election, or ``None`` for a plain weighted sum.
        normalize: divide by the summed weights (of agreeing models, with consensus).
        rescale: L1-rescale each sparsified task vector to its original norm.
        lambda_: scale of the merged task vector.
        generators: one per model, used by the random variants (``generators[i]`` for model i).

    Returns:
        The merged tensor in float32 (float64 if an input is float64).
    """
    dtype = compute_dtype(base, tensors)
    deltas = task_vectors(base, tensors, dtype)
    scratch = torch.empty_like(deltas[0])  # reused by every model; no page is touched unless used
    if sparsification is not None:  # TIES step 1 (trim) / DARE step 1 (drop), model by model
        for i, p in enumerate(params):
            gen = None if generators is None else generators[i]
            sparsify_(deltas[i], sparsification, p, gen, rescale=rescale, scratch=scratch)
    weights = torch.tensor([p.weight for p in params], dtype=dtype, device=deltas.device)
    deltas.mul_(weights.view(-1, *([1] * (deltas.ndim - 1))))  # weights before the vote
    if consensus is None:
        total = weights.sum()
        divisor = torch.where(total.abs() < WEIGHT_SUM_EPS, 1.0, total)
    else:  # TIES steps 2-3: elect the signs, keep the agreeing entries
        divisor = _keep_agreeing_(deltas, weights, consensus, scratch, normalize=normalize)
    merged = deltas.sum(dim=0)
    if normalize:
        merged.div_(divisor)
    if lambda_ != 1:
        merged.mul_(lambda_)
    return merged.add_(base.to(dtype))


def _keep_agreeing_(
    deltas: Tensor, weights: Tensor, consensus: Consensus, scratch: Tensor, *, normalize: bool
) -> Tensor:
    """TIES step 3 (disjoint merge), in place: zero the entries that disagree with the elected
    sign; return the per-entry sum of the agreeing models' weights (0 → 1), or 1 when not
    normalising."""
    sign = elected_sign(deltas, consensus)
    divisor = torch.zeros_like(sign) if normalize else None
    for i in range(deltas.shape[0]):
        agree = torch.mul(deltas[i], sign, out=scratch).gt_(0)  # 1.0 where signs match
        deltas[i].mul_(agree)
        if divisor is not None:
            divisor.add_(agree, alpha=float(weights[i]))
    if divisor is None:
        return torch.ones((), dtype=deltas.dtype, device=deltas.device)
    return divisor.add_(torch.eq(divisor, 0, out=sign))  # no agreeing model: divide by 1
