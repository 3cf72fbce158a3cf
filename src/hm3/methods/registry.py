"""The registered merge methods: one :class:`~hm3.methods.method.MergeMethod` per name.

What it does: lists every method hm3 merges with, its paper, formula, kernel and defaults
(mirroring mergekit 0.1.5's registry), as :data:`METHODS`, and finds one by name
(:func:`get_method`). What it does not: validate or merge (:mod:`hm3.methods.method` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hm3.errors import Hm3Error
from hm3.methods.method import MergeMethod

_TA = "θ = θ_base + λ · Σ_i w_i τ_i / D with τ_i = θ_i − θ_base"
_TIES = (
    "θ = θ_base + λ · Σ_i [sign(w_i τ̂_i) = γ] w_i τ̂_i / D with γ = sign(Σ_i w_i τ̂_i) (0 → +1)"
    " and, when normalising, D = Σ_i [sign(w_i τ̂_i) = γ] w_i per entry (0 → 1)"
)
_DARE = "τ̂_i = m_i ⊙ τ_i · ‖τ_i‖₁ / ‖m_i ⊙ τ_i‖₁ (rescale), m_i ~ Bernoulli(d_i)"
_CRUMBS = "τ̂_i keeps ⌊d_i n⌋ entries of τ_i after dropping the ⌊γ_i n⌋ largest |τ_i| entries"
_DELLA = (
    "τ̂_i = m_i ⊙ τ_i · ‖τ_i‖₁ / ‖m_i ⊙ τ_i‖₁, m_i ~ Bernoulli(d_i − ε_i + 2ε_i (r − 1)/(m − 1))"
    " with r the rank of |τ_i| in its row of m entries"
)
_LINEAR_SUM = "D = Σ_i w_i when normalising (|D| < 1e-8 → 1), else 1"

_ALL = (
    MergeMethod(
        "linear", "Linear (model soup)", "https://arxiv.org/abs/2203.05482",
        "θ = Σ_i w_i θ_i / Σ_i w_i (normalize, default), or Σ_i w_i θ_i; no base model",
        kernel="linear", default_normalize=True,
    ),
    MergeMethod(
        "task_arithmetic", "Task Arithmetic", "https://arxiv.org/abs/2212.04089",
        f"{_TA}; {_LINEAR_SUM}", kernel="task_arithmetic",
    ),
    MergeMethod(
        "ties", "TIES", "https://arxiv.org/abs/2306.01708",
        f"{_TIES}; τ̂_i = the k = max(1, ⌊d_i n⌋) largest-|.| entries of τ_i",
        kernel="task_arithmetic", sparsification="magnitude", consensus="sum",
        default_normalize=True,
    ),
    MergeMethod(
        "dare_ties", "DARE TIES", "https://arxiv.org/abs/2311.03099",
        f"{_TIES}; {_DARE}", kernel="task_arithmetic", sparsification="random",
        consensus="sum", default_rescale=True,
    ),
    MergeMethod(
        "dare_linear", "Linear DARE", "https://arxiv.org/abs/2311.03099",
        f"θ = θ_base + λ · Σ_i w_i τ̂_i / D; {_DARE}; {_LINEAR_SUM}",
        kernel="task_arithmetic", sparsification="random", default_rescale=True,
    ),
    MergeMethod(
        "breadcrumbs", "Model Breadcrumbs", "https://arxiv.org/abs/2312.06795",
        f"θ = θ_base + λ · Σ_i w_i τ̂_i / D; {_CRUMBS}; {_LINEAR_SUM}",
        kernel="task_arithmetic", sparsification="magnitude_outliers",
    ),
    MergeMethod(
        "breadcrumbs_ties", "Model Breadcrumbs with TIES", "https://arxiv.org/abs/2312.06795",
        f"{_TIES}; {_CRUMBS}", kernel="task_arithmetic",
        sparsification="magnitude_outliers", consensus="sum",
    ),
    MergeMethod(
        "della", "DELLA", "https://arxiv.org/abs/2406.11617",
        f"{_TIES}; {_DELLA}", kernel="task_arithmetic", sparsification="della_magprune",
        consensus="sum", default_normalize=True, default_rescale=True,
    ),
    MergeMethod(
        "della_linear", "Linear DELLA", "https://arxiv.org/abs/2406.11617",
        f"θ = θ_base + λ · Σ_i w_i τ̂_i / D; {_DELLA}; {_LINEAR_SUM}",
        kernel="task_arithmetic", sparsification="della_magprune", default_rescale=True,
    ),
    MergeMethod(
        "regmean", "RegMean", "https://arxiv.org/abs/2212.09849",
        "W = (Σ_i w_i W_i G̃_i)(Σ_i w_i G̃_i)⁻¹ for linear weights, G̃_i = α G_i + (1 − α) "
        "diag(G_i), G_i = X_iᵀX_i / m_i on model i's texts; other tensors Σ_i w_i θ_i / Σ_i w_i",
        kernel="regmean", in_mergekit=False,
    ),
    MergeMethod(
        "tsv", "TSV-Merge (task singular vectors)", "https://arxiv.org/abs/2412.00081",
        "θ = θ_base + λ · Û⊥ Σ̂ V̂⊥ᵀ for 2-D tensors, Û = [U_1,k … U_n,k] from τ_i = U_i Σ_i "
        "V_iᵀ, k = max(1, ⌊r/n⌋), Σ̂ = diag(w̃_i Σ_i,k), w̃_i = n w_i / Σ_j w_j, ⊥ = the polar "
        "factor P Qᵀ; other tensors and the label projection θ_base + λ · Σ_i w_i τ_i / Σ_i w_i",
        kernel="tsv", in_mergekit=False,
    ),
)  # fmt: skip

#: every method by name, in a fixed order
METHODS: Mapping[str, MergeMethod] = MappingProxyType({m.name: m for m in _ALL})


def get_method(name: str) -> MergeMethod:
    """The registered method called ``name``.

    Args:
        name: a method name, e.g. ``"dare_ties"``.

    Returns:
        The :class:`MergeMethod`. Raises :class:`~hm3.errors.Hm3Error` (a ``ValueError``)
        listing the valid names when there is none by that name.
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise Hm3Error(
            f"merge_method = {name!r}: unknown; expected one of {', '.join(METHODS)}"
        ) from None
