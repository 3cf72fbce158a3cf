"""The registered merge methods: one :class:`MergeMethod` object per name.

What it does: describes each method (name, pretty name, paper, formula, which parameters it
reads, its defaults, mirroring mergekit 0.1.5's registry), validates inputs once, and runs the
kernel (:func:`~hm3.methods.linear.linear`,
:func:`~hm3.methods.task_arithmetic.generalized_task_arithmetic`,
:func:`~hm3.methods.regmean.regmean` or :func:`~hm3.methods.tsv.tsv_merge`).
What it does not: parse configs, load tensors or cast the result to the output dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor

from hm3.errors import Hm3Error
from hm3.methods.linear import linear
from hm3.methods.params import (
    DEFAULT_OPTIONS,
    RANDOM_SPARSIFICATIONS,
    Consensus,
    MergeOptions,
    ModelParams,
    Sparsification,
    check_generators,
    check_model_params,
)
from hm3.methods.regmean import DEFAULT_ALPHA, check_alpha, check_weights, regmean
from hm3.methods.task_arithmetic import generalized_task_arithmetic
from hm3.methods.tsv import tsv_merge


@dataclass(frozen=True)
class MergeMethod:
    """A merge method; its instance ``__doc__`` gives the name, paper and formula."""

    name: str
    pretty_name: str
    reference: str
    formula: str
    kernel: Literal["linear", "task_arithmetic", "regmean", "tsv"]
    sparsification: Sparsification | None = None
    consensus: Consensus | None = None
    default_normalize: bool = False
    default_rescale: bool = False
    in_mergekit: bool = True  # mergekit 0.1.5 has it (so `hm3 expand` can write its config)

    def __post_init__(self) -> None:
        doc = f"{self.pretty_name} (``{self.name}``), {self.reference}\n\n{self.formula}"
        object.__setattr__(self, "__doc__", doc)

    @property
    def uses_base(self) -> bool:
        """Whether the method reads θ_base (every method but ``linear`` and ``regmean``)."""
        return self.kernel in ("task_arithmetic", "tsv")

    @property
    def needs_positive_weights(self) -> bool:
        """Whether weights must be > 0 (they scale each model's share: regmean, tsv)."""
        return self.kernel in ("regmean", "tsv")

    @property
    def is_random(self) -> bool:
        """Whether the method draws random masks (then it needs generators)."""
        return self.sparsification in RANDOM_SPARSIFICATIONS

    @property
    def per_model_parameters(self) -> frozenset[str]:
        """Which of weight/density/gamma/epsilon the method reads."""
        used = {"weight"}
        if self.sparsification is not None:
            used.add("density")
        if self.sparsification == "magnitude_outliers":
            used.add("gamma")
        if self.sparsification == "della_magprune":
            used.add("epsilon")
        return frozenset(used)

    @property
    def global_parameters(self) -> frozenset[str]:
        """Which of normalize/rescale/lambda/alpha (:class:`MergeOptions`) the method reads."""
        if self.kernel == "linear":
            return frozenset({"normalize"})
        if self.kernel == "regmean":
            return frozenset({"alpha"})
        if self.kernel == "tsv":
            return frozenset({"lambda"})
        return frozenset({"normalize", "rescale", "lambda"})

    def validate(
        self, params: Sequence[ModelParams], options: MergeOptions = DEFAULT_OPTIONS
    ) -> None:
        """Check parameters without merging (configs call this to fail early).

        Args:
            params: one entry per model.
            options: the merge-wide options.

        Returns:
            None. Raises :class:`~hm3.errors.Hm3Error` (a ``ValueError``) naming the bad value.
        """
        if not params:
            raise Hm3Error("models: got none; list at least one model to merge")
        check_model_params(self.name, params, self.per_model_parameters, self.sparsification)
        _check_options(self, options)
        if self.needs_positive_weights:
            check_weights(self.name, [p.weight for p in params])
        if self.kernel == "regmean":
            check_alpha(DEFAULT_ALPHA if options.alpha is None else options.alpha)
        if not math.isfinite(options.lambda_):
            raise Hm3Error(f"lambda = {options.lambda_!r}: expected a finite number")

    def merge(
        self,
        base: Tensor | None,
        tensors: Tensor,
        params: Sequence[ModelParams],
        options: MergeOptions = DEFAULT_OPTIONS,
        generators: Sequence[torch.Generator | None] | None = None,
        *,
        overwrite: bool = False,
        grams: Tensor | None = None,
        decompose: bool = True,
    ) -> Tensor:
        """Merge one tensor of n models.

        Args:
            base: θ_base (ignored by ``linear``; required by the others).
            tensors: the models' tensors stacked as [n, *shape]; not modified unless
                ``overwrite``.
            params: per-model parameters, one per model, in order.
            options: normalize/rescale (``None`` = method default) and lambda.
            generators: one ``torch.Generator`` per model on the tensors' device; needed by
                the random methods for every model whose density is below 1.
            overwrite: let the method use ``tensors`` as its working buffer (its values are
                then undefined); same result, n tensors' less memory for the task-vector
                methods.
            grams: ``regmean`` only: the models' Gram matrices of this linear weight's
                inputs, stacked as [n, in, in]; without them (a bias, a LayerNorm, an
                embedding) ``regmean`` takes the weighted mean, as the paper does.
            decompose: ``tsv`` only: merge a 2-D tensor in its singular vectors; ``False``
                (hm3 passes it for the label projection) takes the weighted mean of task vectors.

        Returns:
            The merged tensor, float32 (float64 if an input is float64); the caller casts.
        """
        self.validate(params, options)
        _check_tensors(self, base, tensors, len(params))
        normalize = self.default_normalize if options.normalize is None else options.normalize
        with torch.no_grad():
            weights = [p.weight for p in params]
            if self.kernel == "regmean":
                alpha = DEFAULT_ALPHA if options.alpha is None else options.alpha
                if grams is None:
                    return linear(tensors, weights, normalize=True)
                return regmean(tensors, grams, weights, alpha)
            if self.kernel == "linear":
                return linear(tensors, weights, normalize=normalize)
            if self.kernel == "tsv":
                return tsv_merge(
                    base, tensors, weights, lambda_=options.lambda_, decompose=decompose,
                    overwrite=overwrite,
                )  # fmt: skip
            if self.is_random:
                check_generators(self.name, params, generators, tensors.device)
            rescale = self.default_rescale if options.rescale is None else options.rescale
            return generalized_task_arithmetic(
                base, tensors, params, sparsification=self.sparsification,
                consensus=self.consensus, normalize=normalize, rescale=rescale,
                lambda_=options.lambda_, generators=generators, overwrite=overwrite,
            )  # fmt: skip


def _check_options(method: MergeMethod, options: MergeOptions) -> None:
    given = {
        "normalize": options.normalize is not None,
        "rescale": options.rescale is not None,
        "lambda": options.lambda_ != 1,
        "alpha": options.alpha is not None,
    }
    unused = [name for name, set_ in given.items() if set_ and name not in method.global_parameters]
    if unused:
        reads = ", ".join(sorted(method.global_parameters))
        raise Hm3Error(
            f"parameters: {', '.join(unused)} not used by {method.name!r} (it reads {reads}); "
            f"remove {', '.join(unused)}"
        )


def _check_tensors(method: MergeMethod, base: Tensor | None, tensors: Tensor, n: int) -> None:
    if not tensors.is_floating_point() or tensors.ndim < 1 or tensors.shape[0] != n:
        raise Hm3Error(
            f"tensors: got {tuple(tensors.shape)} {tensors.dtype}; expected a floating tensor "
            f"stacked as [n_models={n}, ...]; stack one tensor per model with torch.stack"
        )
    if not method.uses_base:
        return
    if base is None:
        raise Hm3Error(f"base: got None; {method.name!r} needs the base model's tensor")
    same = base.shape == tensors.shape[1:] and base.device == tensors.device
    if not same or not base.is_floating_point():
        raise Hm3Error(
            f"base: got {tuple(base.shape)} {base.dtype} on {base.device}; expected floating "
            f"{tuple(tensors.shape[1:])} on {tensors.device} like each model's tensor"
        )


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
