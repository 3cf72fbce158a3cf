"""Closed-form ridge regression of target logits on features, from streamed sufficient statistics.

For features ``X`` (``n × d``, one row per text) and targets ``Y`` (``n × K``), the fit is

    (W, b) = argmin ‖X·Wᵀ + 1·bᵀ − Y‖² + λ‖W‖²,      λ = ridge · trace(Xcᵀ·Xc) / d

where ``Xc`` is ``X`` with its column means removed. Two choices, and why:

- **The bias is not penalised.** The ridge is there to tame directions of feature space that
  the few fitting texts barely span; a constant offset of a logit is always well determined by
  the mean of the targets, and shrinking it towards 0 would only shift the logits. Leaving it
  free also makes the fit invariant to a constant shift of the features (equivalently: ridge
  on centred features, then ``b = ȳ − x̄·Wᵀ``).
- **λ is relative to the feature scale.** ``trace(XcᵀXc)/d`` is the mean eigenvalue of the
  centred scatter matrix, so ``ridge`` is dimensionless: ``ridge = 0.1`` shrinks by half the
  directions whose variance is a tenth of the average, whatever the family (BERT's tanh pooler,
  DistilBERT's ReLU), the hidden size or the number of texts. ``ridge = 0`` is ordinary least
  squares (the minimum-norm solution if the texts do not determine it). An absolute λ would
  need a different value per model and per number of texts, so no ablation would transfer.
  The price: the ridge does not fade as texts are added — it is a prior on the head relative
  to the feature spectrum, whose strength the ablation on real models chooses.

Only ``n``, ``Σx``, ``Σy``, ``Σxxᵀ``, ``Σxyᵀ`` and ``Σy²`` are kept, in float64, so memory is
``O(d² + d·K)`` whatever the number of texts; the features are shifted by the first batch's
mean before accumulating, which keeps the centred sums accurate when features have a large
common offset. One :class:`RidgeStats` serves any number of λ values (:meth:`RidgeStats.solve`).
A projection without a bias is fitted without intercept (uncentred moments, same λ rule).
The in-sample squared error of a solution comes from the same sums, without a second pass.

Pure tensor math: no I/O, no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hm3.defaults import DEFAULT_RIDGE

__all__ = ["DEFAULT_RIDGE", "RidgeSolution", "RidgeStats"]


@dataclass(frozen=True)
class RidgeSolution:
    """A fitted linear map ``y ≈ x·weightᵀ + bias`` (float64) and its in-sample error."""

    weight: torch.Tensor  # [K, d]
    bias: torch.Tensor  # [K]
    lam: float  # the effective λ that multiplied ‖W‖²
    sse: torch.Tensor  # [K] in-sample sum of squared errors per output


class RidgeStats:
    """Sufficient statistics of a ridge fit of ``K`` outputs on ``d`` features."""

    def __init__(self, dim: int, outputs: int) -> None:
        f64 = torch.float64
        self.dim, self.outputs, self.n = dim, outputs, 0
        self.shift: torch.Tensor | None = None
        self.sx = torch.zeros(dim, dtype=f64)
        self.sy = torch.zeros(outputs, dtype=f64)
        self.sxx = torch.zeros(dim, dim, dtype=f64)
        self.sxy = torch.zeros(dim, outputs, dtype=f64)
        self.syy = torch.zeros(outputs, dtype=f64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Accumulate a batch: features ``x`` ``[n, d]`` and targets ``y`` ``[n, K]``."""
        n = x.shape[0] if x.ndim == 2 else -1
        if x.shape != (n, self.dim) or y.shape != (n, self.outputs):
            raise ValueError(
                f"expected features [n, {self.dim}] and targets [n, {self.outputs}], got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        x = x.detach().to("cpu", torch.float64)
        y = y.detach().to("cpu", torch.float64)
        if self.shift is None:
            self.shift = x.mean(dim=0)
        x = x - self.shift
        self.n += x.shape[0]
        self.sx += x.sum(dim=0)
        self.sy += y.sum(dim=0)
        self.sxx += x.T @ x
        self.sxy += x.T @ y
        self.syy += (y * y).sum(dim=0)

    def varying_share(self) -> float:
        """The share of the features' mean square that varies from text to text, in [0, 1].

        ``trace(XcᵀXc) / trace(XᵀX)``: 0 when every text gave the same features (one text, or
        copies of one), which no fit can tell apart; near 1 when the features vary about a small
        common offset.
        """
        if self.n == 0 or self.shift is None:
            return 0.0
        xm = self.sx / self.n
        centred = float(torch.trace(self.sxx)) - self.n * float(xm @ xm)
        offset = self.n * float((xm + self.shift) @ (xm + self.shift))
        total = centred + offset
        return max(centred, 0.0) / total if total > 0 else 0.0

    def solve(self, ridge: float, *, intercept: bool = True) -> RidgeSolution:
        """The ridge solution for a relative strength ``ridge`` (see the module docstring).

        Args:
            ridge: relative strength, ``>= 0``.
            intercept: fit a free bias; without one (a projection that has no bias) the fit
                runs on uncentred features and ``bias`` is zero.
        """
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        if self.n == 0 or self.shift is None:
            raise ValueError("no data: add at least one batch before solving")
        scatter, cross, yy, xm, ym = self._moments(intercept)
        lam = ridge * float(torch.trace(scatter)) / self.dim
        if lam > 0:
            eye = torch.eye(self.dim, dtype=torch.float64)
            w = torch.linalg.solve(scatter + lam * eye, cross)  # [d, K]
        else:
            w = torch.linalg.pinv(scatter, hermitian=True) @ cross
        bias = ym - xm @ w
        sse = (w * (scatter @ w)).sum(dim=0) - 2 * (w * cross).sum(dim=0) + yy
        return RidgeSolution(w.T.contiguous(), bias, lam, sse.clamp_min(0))

    def _moments(self, intercept: bool) -> tuple[torch.Tensor, ...]:
        """XᵀX, XᵀY and Σy² about the means (or about 0 without intercept), and the means."""
        n = self.n
        s = self.shift if self.shift is not None else torch.zeros(self.dim, dtype=torch.float64)
        xm, ym = self.sx / n, self.sy / n  # xm is the mean of the shifted features
        scatter = self.sxx - n * torch.outer(xm, xm)
        cross = self.sxy - n * torch.outer(xm, ym)
        yy = self.syy - n * ym * ym
        if intercept:
            return scatter, cross, yy, xm + s, ym
        mean = xm + s  # uncentred moments: add the mean's share back
        zero_x, zero_y = torch.zeros_like(xm), torch.zeros_like(ym)
        return (
            scatter + n * torch.outer(mean, mean),
            cross + n * torch.outer(mean, ym),
            self.syy,
            zero_x,
            zero_y,
        )
