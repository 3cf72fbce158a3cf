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

``ridge="auto"`` (:meth:`RidgeStats.solve_gcv`) chooses the ridge per group of outputs (a
task's logits) by generalised cross-validation, among :data:`AUTO_RIDGES`. GCV estimates the
error of the fit on texts it was not fitted on, from the in-sample error and the fit's degrees
of freedom (``Σ sⱼ/(sⱼ + λ)`` over the eigenvalues of the centred XᵀX), so it needs nothing
beyond the same sums and one eigendecomposition: no second pass, no held-out texts, no labels.
A task whose original's logits the merged features explain well gets little shrinkage; one
whose targets they explain poorly (noise, for the fit) gets more.

Only ``n``, ``Σx``, ``Σy``, ``Σxxᵀ``, ``Σxyᵀ`` and ``Σy²`` are kept, in float64, so memory is
``O(d² + d·K)`` whatever the number of texts; the features are shifted by the first batch's
mean before accumulating, which keeps the centred sums accurate when features have a large
common offset. One :class:`RidgeStats` serves any number of λ values (:meth:`RidgeStats.solve`).
A projection without a bias is fitted without intercept (uncentred moments, same λ rule).
The in-sample squared error of a solution comes from the same sums, without a second pass.

Pure tensor math: no I/O, no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hm3.defaults import AUTO_RIDGE

__all__ = ["AUTO_RIDGES", "RidgeSolution", "RidgeStats", "stitch"]


# The relative ridges ``ridge="auto"`` chooses among: 0.01 to 10, four per decade, the range the
# ablation measured; ridge 0 breaks down when the texts are near the feature count
# (docs/results/alignment.md).
AUTO_RIDGES = tuple(float(f"{10 ** (k / 4):.4g}") for k in range(-8, 5))


@dataclass(frozen=True)
class RidgeSolution:
    """A fitted linear map ``y ≈ x·weightᵀ + bias`` (float64) and its in-sample error.

    ``ridge`` and ``lam`` are per output: one value for all of them from :meth:`RidgeStats.solve`,
    one per group of outputs from :meth:`RidgeStats.solve_gcv`.
    """

    weight: torch.Tensor  # [K, d]
    bias: torch.Tensor  # [K]
    lam: torch.Tensor  # [K] the effective λ that multiplied ‖W‖²
    sse: torch.Tensor  # [K] in-sample sum of squared errors per output
    ridge: torch.Tensor  # [K] the relative ridge that gave λ


_PER_OUTPUT = ("weight", "bias", "lam", "sse", "ridge")


def stitch(pieces: Sequence[tuple[RidgeSolution, tuple[int, int]]]) -> RidgeSolution:
    """One solution whose outputs ``[start, end)`` are each piece's, for pieces whose ranges
    cover every output once (a task's rows from the fit chosen for it)."""
    first = pieces[0][0]
    parts = {f: torch.empty_like(getattr(first, f)) for f in _PER_OUTPUT}
    for solution, (start, end) in pieces:
        for f, tensor in parts.items():
            tensor[start:end] = getattr(solution, f)[start:end]
    return RidgeSolution(**parts)


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

    def target_scatter(self) -> torch.Tensor:
        """``Σ (y − ȳ)²`` of every output over the texts added so far ``[K]``."""
        return self._moments(True)[2]

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
        per_output = torch.ones(self.outputs, dtype=torch.float64)
        return RidgeSolution(
            w.T.contiguous(), bias, lam * per_output, sse.clamp_min(0), ridge * per_output
        )

    def solve_for(
        self, ridge: float | str, groups: Sequence[tuple[int, int]], *, intercept: bool = True
    ) -> RidgeSolution:
        """:meth:`solve` at a relative ``ridge``, or :meth:`solve_gcv` over ``groups`` for
        ``"auto"``."""
        if ridge == AUTO_RIDGE:
            return self.solve_gcv(groups, AUTO_RIDGES, intercept=intercept)
        if isinstance(ridge, str):
            raise ValueError(f"ridge must be a number or {AUTO_RIDGE!r}, got {ridge!r}")
        return self.solve(ridge, intercept=intercept)

    def gcv(
        self,
        groups: Sequence[tuple[int, int]],
        ridges: Sequence[float] = AUTO_RIDGES,
        *,
        intercept: bool = True,
    ) -> torch.Tensor:
        """Generalised cross-validation score of each group of outputs at each relative ridge.

        ``GCV(λ) = n · SSE(λ) / (n − dof(λ))²`` (Golub, Heath and Wahba 1979), SSE summed over
        the group's outputs ``[start, end)``, ``dof = Σ sⱼ / (sⱼ + λ)`` over the eigenvalues of
        XᵀX (plus 1 for the unpenalised intercept): an estimate, from the fitting texts alone,
        of the error on texts the fit has not seen. ``inf`` where the fit has as many degrees
        of freedom as texts. Returns ``[len(groups), len(ridges)]``.
        """
        if not ridges or min(ridges) <= 0:
            raise ValueError(f"ridges must be > 0, got {list(ridges)}")
        scatter, cross, yy, _, _ = self._moments(intercept)
        scale = float(torch.trace(scatter)) / self.dim
        if scale <= 0:
            raise ValueError("the features do not vary: no ridge can be chosen")
        s, q = torch.linalg.eigh(scatter)
        s = s.clamp_min(0)
        a2 = (q.T @ cross) ** 2  # [d, K]: the targets' energy along each eigenvector
        n = self.n
        out = torch.full((len(groups), len(ridges)), math.inf, dtype=torch.float64)
        for j, ridge in enumerate(ridges):
            f = 1.0 / (s + ridge * scale)
            sse = (yy - (a2 * (2 * f - s * f * f)[:, None]).sum(dim=0)).clamp_min(0)
            free = n - float((s * f).sum()) - (1 if intercept else 0)
            if free > 0:
                for i, (start, end) in enumerate(groups):
                    out[i, j] = n * float(sse[start:end].sum()) / free**2
        return out

    def solve_gcv(
        self,
        groups: Sequence[tuple[int, int]],
        ridges: Sequence[float] = AUTO_RIDGES,
        *,
        intercept: bool = True,
    ) -> RidgeSolution:
        """Each group of outputs fitted at the ridge of ``ridges`` with the lowest :meth:`gcv`.

        The groups (a task's logits) must cover every output once. A group whose score is
        ``inf`` at every ridge (fewer texts than the fit's degrees of freedom) takes the
        largest ridge.
        """
        covered = sorted(i for start, end in groups for i in range(start, end))
        if covered != list(range(self.outputs)):
            raise ValueError(f"groups {list(groups)} must cover outputs 0..{self.outputs - 1} once")
        scores = self.gcv(groups, ridges, intercept=intercept)
        chosen = [
            len(ridges) - 1 if torch.isinf(row).all() else int(row.argmin()) for row in scores
        ]
        fits = {j: self.solve(ridges[j], intercept=intercept) for j in set(chosen)}
        return stitch([(fits[j], group) for group, j in zip(groups, chosen, strict=True)])

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
