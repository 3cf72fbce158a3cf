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
#: entries combined at a time on a single-threaded CPU: the models' slices and temporaries
#: stay in cache. With several intra-op threads every chunk would pay the thread pool's
#: synchronisation (badly so on a busy machine), so a tensor is then combined whole.
COMBINE_CHUNK = 1 << 17


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The dtype a merge computes in: float64 if any input is float64, else float32.

    Args:
        tensors: the inputs (``None`` entries are ignored).

    Returns:
        ``torch.float64`` or ``torch.float32``.
    """
    wide = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return torch.float64 if wide else torch.float32


def task_vectors(
    base: Tensor, tensors: Tensor, dtype: torch.dtype, *, overwrite: bool = False
) -> Tensor:
    """Task arithmetic step 1: τ_i = θ_i − θ_base for every model.

    Args:
        base: θ_base, shaped like one model's tensor.
        tensors: θ_i stacked as [n, *shape]; not modified unless ``overwrite``.
        dtype: compute dtype of the result.
        overwrite: when ``tensors`` is already in ``dtype``, subtract in place and return it
            (saves a buffer of n tensors; the values are the same).

    Returns:
        An [n, *shape] tensor of task vectors in ``dtype``: a new one, or ``tensors``.
    """
    base = base.to(dtype)
    if tensors.dtype == dtype:
        return tensors.sub_(base) if overwrite else torch.sub(tensors, base)
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
    overwrite: bool = False,
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
        overwrite: let the merge use ``tensors`` as its working buffer (its values are then
            undefined); the result is the same, and n tensors' worth of memory is saved.

    Returns:
        The merged tensor in float32 (float64 if an input is float64).
    """
    dtype = compute_dtype(base, tensors)
    deltas = task_vectors(base, tensors, dtype, overwrite=overwrite)
    if sparsification is not None:  # TIES step 1 (trim) / DARE step 1 (drop), model by model
        scratch = torch.empty_like(deltas[0])  # shared by the models
        for i, p in enumerate(params):
            gen = None if generators is None else generators[i]
            sparsify_(deltas[i], sparsification, p, gen, rescale=rescale, scratch=scratch)
        del scratch
    weights = torch.tensor([p.weight for p in params], dtype=dtype, device=deltas.device)
    return _combine_in_chunks(
        deltas, base.to(dtype), weights, consensus, normalize=normalize, lambda_=lambda_
    )


def _combine_in_chunks(
    deltas: Tensor,
    base: Tensor,
    weights: Tensor,
    consensus: Consensus | None,
    *,
    normalize: bool,
    lambda_: float,
) -> Tensor:
    """Everything after the sparsification, in chunks of :data:`COMBINE_CHUNK` entries on a
    single-threaded CPU, else whole; returns the merged tensor (the same bytes either way)."""
    divisor = None
    if consensus is None and normalize:
        total = weights.sum()
        divisor = torch.where(total.abs() < WEIGHT_SUM_EPS, 1.0, total)
    merged = torch.empty(base.shape, dtype=deltas.dtype, device=deltas.device)
    flat, flat_base = deltas.reshape(deltas.shape[0], -1), base.reshape(-1)
    m = flat.shape[1]
    chunked = deltas.device.type == "cpu" and torch.get_num_threads() == 1
    step = max(1, min(COMBINE_CHUNK, m) if chunked else m)
    scratch = None if consensus is None else torch.empty_like(flat_base[:step])
    for start in range(0, m, step):
        part = slice(start, start + step)
        _combine(flat[:, part], weights, flat_base[part], merged.view(-1)[part], consensus,
                 divisor, scratch, normalize=normalize, lambda_=lambda_)  # fmt: skip
    return merged


def _combine(
    deltas: Tensor,
    weights: Tensor,
    base: Tensor,
    out: Tensor,
    consensus: Consensus | None,
    divisor: Tensor | None,
    scratch: Tensor | None,
    *,
    normalize: bool,
    lambda_: float,
) -> None:
    """Weight, elect, sum, normalise, scale and add the base for some entries, into ``out``.

    ``deltas`` is [n, m] (modified), ``base`` and ``out`` [m]; ``divisor`` is the summed weight
    without consensus; ``scratch`` holds at least m entries (needed with consensus). Each step
    is entry-wise, so any split into chunks gives the same bytes.
    """
    deltas.mul_(weights.view(-1, 1))  # weights before the vote
    if consensus is not None and scratch is not None:  # TIES steps 2-3: elect, keep agreeing
        scratch = scratch[: out.numel()]
        divisor = _keep_agreeing_(deltas, weights, consensus, scratch, normalize=normalize)
    torch.sum(deltas, dim=0, out=out)
    if normalize and divisor is not None:
        out.div_(divisor)
    if lambda_ != 1:
        out.mul_(lambda_)
    out.add_(base)


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
