"""TSV-Merge: merge each weight matrix in the decorrelated span of the models' top singular vectors.

What it does: for one 2-D tensor of n models with task matrices τ_i = θ_i − θ_base = U_i Σ_i V_iᵀ
(Gargiulo et al. 2025, "Task Singular Vectors: Reducing Task Interference in Model Merging",
https://arxiv.org/abs/2412.00081, sec. 4):

1. keep each model's k = max(1, ⌊r / n⌋) leading singular triplets, r = min(rows, cols)
   (the paper's "1/n of the rank"). hm3 drops triplets whose singular value is rounding noise
   (≤ max(Σ_i) · max(rows, cols) · eps): when τ_i has fewer than k directions (rows a model never
   trained, such as position embeddings past its training length), an SVD fills the rest with
   arbitrary vectors, and the polar factor below would let them rotate the real ones;
2. concatenate them, Û = [U_1,k … U_n,k], Σ̂ = diag(w̃_1 Σ_1,k … w̃_n Σ_n,k), V̂ likewise, with
   relative weights w̃_i = n · w_i / Σ_j w_j (all 1 for equal weights);
3. replace Û and V̂ by their nearest matrices with orthonormal columns (the polar factor
   P Qᵀ of P S Qᵀ = Û): this removes the overlap between tasks' singular vectors, which the
   paper measures as their interference. Where Û is rank deficient (a model listed twice)
   hm3 takes P Qᵀ over its non-zero singular values only, which the paper's code leaves to
   the SVD routine's arbitrary choice; copies of one model then merge to the rank-k
   truncation of its task matrix;
4. θ = θ_base + λ · Û⊥ Σ̂ V̂⊥ᵀ.

Every other tensor (biases, LayerNorms, and whatever the caller does not want decomposed, such as
hm3's padded label projection) takes the weighted mean of task vectors, as the paper does:
θ = θ_base + λ · Σ_i w_i τ_i / Σ_i w_i. Not in mergekit 0.1.5; checked against a NumPy
transcription of the steps above in ``tests/test_tsv.py``.
What it does not: read checkpoints, choose which tensors are decomposed (the caller passes
``decompose``), or cast to the output dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hm3.methods.task_arithmetic import compute_dtype, task_vectors


def tsv_merge(
    base: Tensor,
    tensors: Tensor,
    weights: Sequence[float],
    *,
    lambda_: float = 1.0,
    decompose: bool = True,
    overwrite: bool = False,
) -> Tensor:
    """TSV-Merge of one tensor (steps 1–4 of the module docstring).

    Args:
        base: θ_base, shaped like one model's tensor.
        tensors: θ_i stacked as [n, *shape]; not modified unless ``overwrite``.
        weights: w_i, one per model, each > 0 (checked by the caller).
        lambda_: scale of the merged task vector (the paper's α).
        decompose: merge a 2-D tensor in its singular vectors; ``False`` (or a tensor that is
            not 2-D) takes the weighted mean of task vectors.
        overwrite: let the task vectors be computed in ``tensors`` itself.

    Returns:
        The merged tensor in float32 (float64 if an input is float64).
    """
    dtype = compute_dtype(base, tensors)
    taus = task_vectors(base, tensors, dtype, overwrite=overwrite)
    w = torch.tensor(list(weights), dtype=dtype, device=taus.device)
    w = w * (len(weights) / w.sum())  # relative weights w̃_i, mean 1
    if decompose and taus.ndim == 3:
        delta = singular_merge(taus, w)
    else:
        delta = torch.tensordot(w, taus, dims=1).div_(len(weights))
    return delta.mul_(lambda_).add_(base.to(dtype))


def singular_merge(taus: Tensor, weights: Tensor) -> Tensor:
    """Steps 1–3: Û⊥ Σ̂ V̂⊥ᵀ from task matrices stacked as [n, rows, cols].

    Args:
        taus: the task matrices τ_i, [n, rows, cols].
        weights: the relative weights w̃_i, [n], in the task matrices' dtype.

    Returns:
        The merged task matrix, [rows, cols].
    """
    u, s, v = _decorrelated(taus, weights)
    if s.numel() == 0:
        return torch.zeros_like(taus[0])
    return (u * s) @ v.T


def _decorrelated(taus: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Û⊥, the diagonal of Σ̂ and V̂⊥."""
    n, rows, cols = taus.shape
    k = max(1, min(rows, cols) // n)
    us, ss, vs = [], [], []
    for tau, w in zip(taus, weights, strict=True):
        u, s, vh = finite_svd(tau)
        keep = s[:k] > _tolerance(s, tau.shape)  # directions beyond τ_i's rank are arbitrary
        us.append(u[:, :k][:, keep])
        ss.append(s[:k][keep] * w)
        vs.append(vh[:k][keep])
    s = torch.cat(ss)
    if s.numel() == 0:
        return taus.new_zeros(rows, 0), s, taus.new_zeros(cols, 0)
    u = polar_factor(torch.cat(us, dim=1))
    v = polar_factor(torch.cat(vs, dim=0).T)
    return u, s, v


def finite_svd(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.linalg.svd(m, full_matrices=False)``, redone in float64 if it is not finite.

    LAPACK's divide-and-conquer SVD can return NaN singular vectors for a well-conditioned
    float32 matrix: measured on the demo zoo, the 512 × 379 Û of four MiniLM models' position
    embeddings came back with NaN in U and V on 2 CPU threads, and finite on 1 or 4 threads or
    in float64. The retry costs nothing when the first answer is finite. (A non-finite ``m``
    is refused by ``torch.linalg.svd`` itself.)
    """
    factors = torch.linalg.svd(m, full_matrices=False)
    if _finite(factors):
        return factors
    factors = torch.linalg.svd(m.double(), full_matrices=False)
    if not _finite(factors):
        raise RuntimeError(f"SVD of a {tuple(m.shape)} matrix failed in float32 and float64")
    return tuple(t.to(m.dtype) for t in factors)


def _finite(tensors: Sequence[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _tolerance(s: Tensor, shape: torch.Size) -> Tensor:
    """Singular values at or below this are rounding noise: max(S) · max(rows, cols) · eps."""
    return s.max() * max(shape) * torch.finfo(s.dtype).eps if s.numel() else s.new_zeros(())


def polar_factor(m: Tensor) -> Tensor:
    """The partial isometry nearest to ``m``: P Qᵀ over the non-zero singular values of m.

    For a matrix of full rank this is the nearest matrix with orthonormal columns (rows, if
    wider than tall), the orthogonal Procrustes solution the paper uses. Where ``m`` is rank
    deficient (a model listed twice gives repeated columns) the directions with a zero
    singular value are arbitrary in any SVD, so they are left out: the result is then the
    same whatever the SVD routine picks.

    Args:
        m: a [rows, cols] matrix with SVD P S Qᵀ.

    Returns:
        P Qᵀ restricted to S > max(S) · max(rows, cols) · eps, shaped like ``m``.
    """
    p, s, qh = finite_svd(m)
    keep = s > _tolerance(s, m.shape)
    return p[:, keep] @ qh[keep]
