"""Sparsification of one task vector τ_i = θ_i − θ_base, in place.

What it does: the four variants of mergekit 0.1.5 (magnitude top-k for TIES, Bernoulli drop for
DARE, magnitude window for Model Breadcrumbs, rank-scaled Bernoulli for DELLA) and the L1 rescale
that restores the norm of what was dropped. Each ``*_`` function works in place on one model's
delta (a view into the caller's stacked buffer) and may use a caller-provided scratch buffer of
the same size, so a merge allocates no per-model temporaries of full size.
What it does not: weight, elect signs or sum models (see :mod:`hm3.methods.task_arithmetic`),
or touch the global random state: every draw is ``torch.bernoulli(probs, generator=...)`` with
the caller's generator, or a draw that gives the same mask from the same generator state (see
:func:`random_`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from hm3.methods.masks import (
    della_probabilities,
    outlier_window,
    rank_window_mask,
    top_k_count,
)
from hm3.methods.params import ModelParams, Sparsification

#: mergekit's tolerance below which an L1 norm counts as zero and no rescale happens
RESCALE_EPS = 1e-7


def rescale_l1_(
    masked: Tensor,
    original_l1: Tensor | float,
    eps: float = RESCALE_EPS,
    *,
    scratch: Tensor | None = None,
) -> Tensor:
    """DARE step 2 (rescale): scale ``masked`` in place so its L1 norm is ``original_l1``.

    Nothing is scaled when either norm is below ``eps`` (mergekit's behaviour).

    Args:
        masked: the sparsified task vector, modified in place.
        original_l1: L1 norm of the task vector before sparsification.
        eps: tolerance under which a norm counts as zero.
        scratch: optional buffer of ``masked``'s size and dtype, overwritten.

    Returns:
        ``masked``.
    """
    before = torch.as_tensor(original_l1, dtype=masked.dtype, device=masked.device)
    after = l1_norm(masked, scratch)
    ratio = torch.where((before < eps) | (after < eps), 1.0, before / after)
    return masked.mul_(ratio)


def l1_norm(x: Tensor, scratch: Tensor | None = None) -> Tensor:
    """‖x‖₁ summed like mergekit (``x.abs().sum()``), through ``scratch`` when given.

    Args:
        x: any tensor.
        scratch: optional buffer of ``x``'s size and dtype, overwritten.

    Returns:
        A 0-D tensor.
    """
    return torch.abs(x, out=_scratch(scratch, x)).sum()


def _apply_mask_(delta: Tensor, keep: Tensor, scratch: Tensor) -> None:
    scratch.copy_(keep)  # a float copy of the mask: multiplying by bool would allocate
    delta.mul_(scratch)


def _uniform_gives_bernoulli_mask(buffer: Tensor, generator: torch.Generator | None) -> bool:
    """Whether ``torch.rand(...) < p`` draws ``torch.bernoulli``'s mask: on CPU, in float32."""
    on_cpu = generator is None or generator.device.type == "cpu"
    return on_cpu and buffer.device.type == "cpu" and buffer.dtype == torch.float32


def _scratch(scratch: Tensor | None, like: Tensor) -> Tensor:
    return torch.empty_like(like) if scratch is None else scratch.view_as(like)


def magnitude_(
    delta: Tensor, density: float, *, rescale: bool = False, scratch: Tensor | None = None
) -> Tensor:
    """TIES step 1 (trim), in place: zero all but the k largest |τ| entries.

    Args:
        delta: one model's task vector, modified in place.
        density: fraction kept, in (0, 1]; 1 leaves ``delta`` untouched.
        rescale: L1-rescale the kept entries to the original norm.
        scratch: optional buffer of ``delta``'s size and dtype, overwritten.

    Returns:
        ``delta``.
    """

    def largest(n: int) -> tuple[int, int]:
        return n - top_k_count(n, density), n

    return _magnitude_window_(delta, density, largest, rescale, scratch)


def magnitude_outliers_(
    delta: Tensor,
    density: float,
    gamma: float,
    *,
    rescale: bool = False,
    scratch: Tensor | None = None,
) -> Tensor:
    """Breadcrumbs step 1, in place: zero the largest ⌊γ·n⌋ and the smallest |τ| entries.

    Args:
        delta: one model's task vector, modified in place.
        density: fraction kept, in (0, 1]; 1 leaves ``delta`` untouched.
        gamma: fraction of the largest-magnitude entries removed, in [0, 1).
        rescale: L1-rescale the kept entries to the original norm.
        scratch: optional buffer of ``delta``'s size and dtype, overwritten.

    Returns:
        ``delta``.
    """

    def window(n: int) -> tuple[int, int]:
        return outlier_window(n, density, gamma)

    return _magnitude_window_(delta, density, window, rescale, scratch)


def _magnitude_window_(
    delta: Tensor,
    density: float,
    window: Callable[[int], tuple[int, int]],
    rescale: bool,
    scratch: Tensor | None,
) -> Tensor:
    """Keep the entries whose |τ| rank (ascending) lies in ``window(numel)``; zero the rest."""
    if density >= 1:
        return delta
    mags = torch.abs(delta, out=_scratch(scratch, delta))
    before = mags.sum() if rescale else None
    keep = rank_window_mask(mags, *window(delta.numel()))
    _apply_mask_(delta, keep, mags)
    return delta if before is None else rescale_l1_(delta, before, scratch=scratch)


def random_(
    delta: Tensor,
    density: float,
    generator: torch.Generator | None,
    *,
    rescale: bool = False,
    scratch: Tensor | None = None,
) -> Tensor:
    """DARE step 1 (drop), in place: keep each entry with probability ``density``.

    One ``torch.bernoulli(probs, generator=generator)`` draw over the whole tensor. On CPU in
    float32 the same mask comes from ``torch.rand(generator=generator) < density``, about twice as
    fast: both run one serial Mersenne Twister loop that turns each 32-bit draw into a 24-bit
    uniform and keeps the entry when it is below the (float32) density, so they read the same
    numbers in the same order and leave the generator in the same state
    (``test_random_on_cpu_draws_the_mask_bernoulli_draws``).

    Args:
        delta: one model's task vector, modified in place.
        density: keep probability, in (0, 1]; 1 leaves ``delta`` untouched (no draw).
        generator: the model's random generator, on ``delta``'s device.
        rescale: DARE step 2, L1-rescale the kept entries to the original norm.
        scratch: optional buffer of ``delta``'s size and dtype, overwritten.

    Returns:
        ``delta``.
    """
    return _bernoulli_drop_(delta, density, density, generator, rescale, scratch)


def della_magprune_(
    delta: Tensor,
    density: float,
    epsilon: float,
    generator: torch.Generator | None,
    *,
    rescale: bool = False,
    scratch: Tensor | None = None,
) -> Tensor:
    """DELLA step 1 (MagPrune), in place: keep each entry with a rank-dependent probability.

    As :func:`random_` (DELLA step 2 is its ``rescale``), but each entry's keep probability
    comes from :func:`della_probabilities`: ``density`` on average, within ``density ± epsilon``
    (``epsilon`` is the half-width of that range, which must lie in (0, 1)).
    """

    def probabilities(out: Tensor) -> Tensor:
        return della_probabilities(delta, density, epsilon, out=out)

    return _bernoulli_drop_(delta, density, probabilities, generator, rescale, scratch)


def _bernoulli_drop_(
    delta: Tensor,
    density: float,
    probabilities: float | Callable[[Tensor], Tensor],
    generator: torch.Generator | None,
    rescale: bool,
    scratch: Tensor | None,
) -> Tensor:
    """Keep each entry of ``delta`` with probability ``probabilities``: one number for every
    entry, or a function that writes each entry's into the buffer it is given."""
    if density >= 1:
        return delta
    before = l1_norm(delta, scratch) if rescale else None
    buffer = _scratch(scratch, delta)
    if callable(probabilities):
        keep = torch.bernoulli(probabilities(buffer), generator=generator, out=buffer)
    elif _uniform_gives_bernoulli_mask(buffer, generator):
        keep = torch.rand(buffer.shape, generator=generator, out=buffer).lt_(probabilities)
    else:
        keep = torch.bernoulli(buffer.fill_(probabilities), generator=generator, out=buffer)
    delta.mul_(keep)
    return delta if before is None else rescale_l1_(delta, before, scratch=scratch)


def sparsify_(
    delta: Tensor,
    method: Sparsification,
    params: ModelParams,
    generator: torch.Generator | None = None,
    *,
    rescale: bool = False,
    scratch: Tensor | None = None,
) -> Tensor:
    """Sparsify one model's task vector in place with the named variant.

    Args:
        delta: one model's task vector, modified in place.
        method: ``magnitude``, ``random``, ``magnitude_outliers`` or ``della_magprune``.
        params: the model's parameters (density, gamma, epsilon).
        generator: the model's generator (random variants only).
        rescale: L1-rescale the kept entries to the original norm.
        scratch: optional buffer of ``delta``'s size and dtype, overwritten.

    Returns:
        ``delta``.
    """
    d = params.density
    if method == "magnitude":
        return magnitude_(delta, d, rescale=rescale, scratch=scratch)
    if method == "random":
        return random_(delta, d, generator, rescale=rescale, scratch=scratch)
    if method == "magnitude_outliers":
        return magnitude_outliers_(delta, d, params.gamma, rescale=rescale, scratch=scratch)
    if method == "della_magprune":
        eps = params.epsilon
        return della_magprune_(delta, d, eps, generator, rescale=rescale, scratch=scratch)
    raise ValueError(
        f"sparsification = {method!r}: expected one of magnitude, random, "
        "magnitude_outliers, della_magprune"
    )
