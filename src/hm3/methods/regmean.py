"""RegMean: merge linear layers so the merged layer reproduces every model's outputs on its inputs.

What it does: for one linear layer ``y = x Wᵀ (+ b)`` of n models, with ``G_i = X_iᵀ X_i / m_i``
the Gram matrix of model i's inputs to that layer on its own texts (``m_i`` rows), solves

    W = argmin_W Σ_i w_i ‖X_i Wᵀ − X_i W_iᵀ‖² / m_i
      = (Σ_i w_i W_i G̃_i) (Σ_i w_i G̃_i)⁻¹,   G̃_i = α G_i + (1 − α) diag(G_i)

(Jin et al. 2023, "Dataless Knowledge Fusion by Merging Weights of Language Models",
https://arxiv.org/abs/2212.09849, eq. 3; α < 1 shrinks the off-diagonal entries, the paper's
regulariser). Everything is linear in each model's terms, so a merge accumulates three sums model
by model (:class:`RegMeanSums`: ``Σ w_i W_i G_i``, ``Σ w_i W_i diag(G_i)``, ``Σ w_i G_i``) and
solves once for any α: memory is one model's statistics, not n.
What it does not: run models or read texts (``hm3.merging.regmean_stats`` collects the Gram
matrices), or merge tensors that are not linear-layer weights (RegMean averages those: the
``linear`` kernel with normalised weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hm3.errors import Hm3Error

#: RegMean's off-diagonal scale when none is given: α barely matters on the demo zoo
#: (docs/results/regmean-tsv.md)
DEFAULT_ALPHA = 0.9
#: texts per model for the Gram matrices when none is given: past saturation on the demo zoo,
#: with room for wider layers and shorter texts (docs/results/regmean-tsv.md)
DEFAULT_REGMEAN_TEXTS = 500


@dataclass
class RegMeanSums:
    """The running sums of one linear weight over the models merged so far (float64).

    Attributes:
        num: Σ_i w_i W_i G_i, shape [out, in].
        num_diag: Σ_i w_i W_i diag(G_i), shape [out, in].
        den: Σ_i w_i G_i, shape [in, in].
    """

    num: Tensor
    num_diag: Tensor
    den: Tensor

    @classmethod
    def zeros(
        cls, out_features: int, in_features: int, device: torch.device | str = "cpu"
    ) -> RegMeanSums:
        """Empty sums for a weight of shape [out_features, in_features]."""
        kw = {"dtype": torch.float64, "device": device}
        return cls(
            torch.zeros(out_features, in_features, **kw),
            torch.zeros(out_features, in_features, **kw),
            torch.zeros(in_features, in_features, **kw),
        )

    def add(self, weight: Tensor, gram: Tensor, w: float = 1.0) -> None:
        """Add model i's terms (paper eq. 3, one summand).

        Args:
            weight: W_i, shape [out, in].
            gram: G_i = X_iᵀ X_i / m_i, shape [in, in] (symmetric).
            w: the model's weight w_i (> 0).
        """
        _check_shapes(weight, gram, self.num.shape)
        weight, gram = weight.to(self.num), gram.to(self.den)
        self.num.add_(weight @ gram, alpha=w)
        self.num_diag.add_(weight * torch.diagonal(gram), alpha=w)
        self.den.add_(gram, alpha=w)

    def solve(self, alpha: float = DEFAULT_ALPHA, name: str = "weight") -> Tensor:
        """The merged weight ``(α num + (1−α) num_diag) (α den + (1−α) diag(den))⁻¹`` (float64).

        Args:
            alpha: off-diagonal scale α in [0, 1]; 0 gives a per-input-feature weighted mean.
            name: the tensor's name, for the error message.

        Returns:
            The merged weight, shape [out, in]. Raises :class:`Hm3Error` when the scaled Gram
            sum is singular (an input feature that is zero on every text).
        """
        check_alpha(alpha)
        diag = torch.diagonal(self.den)
        den = self.den * alpha
        den.diagonal().add_(diag, alpha=1 - alpha)
        num = self.num * alpha + self.num_diag * (1 - alpha)
        solved, info = torch.linalg.solve_ex(den, num.T)
        if int(info) != 0 or not bool(torch.isfinite(solved).all()):
            raise Hm3Error(
                f"regmean: the Gram matrix of {name}'s inputs is singular (an input feature is "
                "zero on every text); give more or more varied texts, or lower alpha"
            )
        return solved.T  # den is symmetric: W den = num  <=>  den Wᵀ = numᵀ


def regmean(
    tensors: Tensor, grams: Tensor, weights: Sequence[float], alpha: float = DEFAULT_ALPHA
) -> Tensor:
    """RegMean of one linear weight of n models, from the models' weights and Gram matrices.

    Args:
        tensors: W_i stacked as [n, out, in]; not modified.
        grams: G_i stacked as [n, in, in].
        weights: w_i, one per model (> 0).
        alpha: off-diagonal scale α in [0, 1].

    Returns:
        The merged weight [out, in] in float32 (float64 for float64 inputs).
    """
    if tensors.ndim != 3 or grams.ndim != 3 or grams.shape[0] != tensors.shape[0]:
        raise Hm3Error(
            f"regmean: got weights {tuple(tensors.shape)} and Gram matrices "
            f"{tuple(grams.shape)}; expected [n, out, in] and [n, in, in]"
        )
    check_weights("regmean", weights)
    sums = RegMeanSums.zeros(tensors.shape[1], tensors.shape[2], tensors.device)
    for i, w in enumerate(weights):
        sums.add(tensors[i], grams[i], w)
    out_dtype = torch.float64 if tensors.dtype == torch.float64 else torch.float32
    return sums.solve(alpha).to(out_dtype)


def check_alpha(alpha: float) -> None:
    """Reject an off-diagonal scale outside [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise Hm3Error(
            f"alpha = {alpha!r}: expected a number in [0, 1] (RegMean's off-diagonal scale; "
            f"default {DEFAULT_ALPHA})"
        )


def check_weights(method: str, weights: Sequence[float]) -> None:
    """RegMean's and TSV's weights scale each model's share of the merge: they must be positive."""
    bad = [w for w in weights if not w > 0]
    if bad:
        raise Hm3Error(
            f"weight = {bad[0]!r}: {method} weights scale each model's share of the merge and "
            "must be > 0; remove the model or give it a positive weight"
        )


def _check_shapes(weight: Tensor, gram: Tensor, shape: torch.Size) -> None:
    if weight.shape != shape or gram.shape != (shape[1], shape[1]):
        raise Hm3Error(
            f"regmean: got a weight {tuple(weight.shape)} and a Gram matrix "
            f"{tuple(gram.shape)}; expected {tuple(shape)} and {(shape[1], shape[1])}"
        )
