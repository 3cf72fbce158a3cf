"""hm3.methods properties: exact top-k, Bernoulli rates, determinism, self-merge, errors."""

from __future__ import annotations

import pytest
import torch

from hm3.methods import (
    METHODS,
    MergeOptions,
    ModelParams,
    consensus_mask,
    get_method,
    magnitude_,
    magnitude_mask,
    outlier_mask,
    random_,
    rank_window_mask,
    rescale_l1_,
)

RANDOM = [name for name, m in METHODS.items() if m.is_random]


def tied_values(n: int, seed: int) -> torch.Tensor:
    """Values in {-3, ..., 3}: many ties in magnitude, zeros included."""
    return torch.randint(-3, 4, (n,), generator=torch.Generator().manual_seed(seed)).float()


def body(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(64, 32, generator=gen)
    return base, base + 0.05 * torch.randn(n, 64, 32, generator=gen)


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000, 4099])
@pytest.mark.parametrize("density", [0.001, 0.1, 0.25, 0.5, 0.999, 1.0])
def test_magnitude_keeps_exactly_k_largest_even_with_ties(n, density):
    x = tied_values(n, seed=n)
    keep = magnitude_mask(x, density)
    k = n if density >= 1 else max(1, int(density * n))
    assert int(keep.sum()) == k
    if k < n:
        assert x[keep].abs().min() >= x[~keep].abs().max()
    trimmed = magnitude_(x.clone(), density)
    assert torch.equal(trimmed, x * keep)


@pytest.mark.parametrize("seed", range(8))
def test_rank_window_equals_a_stable_sort_window(seed):
    gen = torch.Generator().manual_seed(seed)
    x = tied_values(500, seed).abs().view(20, 25)
    start, stop = sorted(torch.randint(0, 501, (2,), generator=gen).tolist())
    ranks = torch.empty(500, dtype=torch.long)
    ranks[torch.sort(x.reshape(-1), stable=True).indices] = torch.arange(500)
    expected = ((ranks >= start) & (ranks < stop)).view(20, 25)
    assert torch.equal(rank_window_mask(x, start, stop), expected)


@pytest.mark.parametrize(("density", "gamma"), [(0.5, 0.01), (0.3, 0.2), (0.9, 0.3), (0.1, 0.0)])
def test_outlier_mask_keeps_the_middle_of_the_magnitudes(density, gamma):
    x = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    keep = outlier_mask(x, density, gamma)
    kept, top = int(density * 1000), int(gamma * 1000)
    assert int(keep.sum()) == kept
    order = x.abs().argsort()
    dropped_top = min(top, 1000 - kept)
    assert torch.equal(
        keep[order],
        torch.arange(1000).ge(1000 - kept - dropped_top)
        & torch.arange(1000).lt(1000 - dropped_top),
    )


def test_bernoulli_density_half_keeps_about_half():
    n = 200_000
    kept = random_(torch.ones(n), 0.5, seeded(0)[0])
    # mean of n Bernoulli(.5): σ = sqrt(.25/n) ≈ .0011, so ±.01 is ~9σ
    assert abs(kept.mean().item() - 0.5) < 0.01
    assert set(kept.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("density", [1e-7, 0.1, 1 / 3, 0.5, 0.9999999])
@pytest.mark.parametrize("shape", [(1,), (7, 5), (3, 100_003)])
def test_random_on_cpu_draws_the_mask_bernoulli_draws(shape, density):
    # the float32 CPU path draws with torch.rand; it must be torch.bernoulli's mask, bit for bit,
    # and leave the generator where torch.bernoulli leaves it (the next model's draw follows)
    delta = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours, theirs = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    scratch = torch.empty(delta.numel())
    kept = random_(delta.clone(), density, ours, scratch=scratch)
    mask = torch.bernoulli(torch.full_like(delta, density), generator=theirs)
    assert torch.equal(kept, delta * mask)
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_random_in_float64_keeps_the_bernoulli_draw():
    delta = torch.randn(5_000, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kept = random_(delta.clone(), 0.3, torch.Generator().manual_seed(3))
    mask = torch.bernoulli(torch.full_like(delta, 0.3), generator=torch.Generator().manual_seed(3))
    assert torch.equal(kept, delta * mask)


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_gives_the_same_bytes(name):
    base, models = body(2)
    ps = [ModelParams(weight=1.0, density=0.4), ModelParams(weight=0.7, density=0.6)]
    first = METHODS[name].merge(base, models, ps, generators=seeded(7, 8))
    again = METHODS[name].merge(base, models, ps, generators=seeded(7, 8))
    other = METHODS[name].merge(base, models, ps, generators=seeded(7, 9))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", ["dare_linear", "della_linear"])
def test_self_merge_draws_independent_masks(name):
    # one model listed twice, no rescale/normalise: merged - base = τ ⊙ (m1 + m2), so an
    # entry equals τ exactly when one mask kept it and the other dropped it
    base, models = body(1)
    twice, tau = models.expand(2, 64, 32), models[0] - base
    ps = [ModelParams(density=0.5, epsilon=0.1)] * 2
    options = MergeOptions(normalize=False, rescale=False)
    delta = METHODS[name].merge(base, twice, ps, options, seeded(1, 2)) - base
    exactly_one = (delta == tau).float().mean().item()
    assert 0.35 < exactly_one < 0.65  # independent masks at p ≈ .5: about half
    same = METHODS[name].merge(base, twice, ps, options, seeded(1, 1)) - base
    assert (same == tau).sum() == 0  # shared masks: every entry is 0 or 2τ


def test_l1_rescale_restores_the_original_norm():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(4))
    masked = x * (torch.arange(1000) % 3 == 0)
    rescale_l1_(masked, x.abs().sum())
    assert masked.abs().sum().item() == pytest.approx(x.abs().sum().item(), rel=1e-6)
    # below mergekit's eps (1e-7) nothing is scaled, and nothing becomes NaN
    assert torch.equal(rescale_l1_(torch.zeros(5), 3.0), torch.zeros(5))
    tiny = torch.tensor([1e-9, 0.0])
    assert torch.equal(rescale_l1_(tiny.clone(), 5.0), tiny)


def test_consensus_sum_and_count_can_disagree():
    deltas = torch.tensor([[5.0, 0.0, 2.0], [-1.0, 1.0, -2.0], [-1.0, 0.0, 0.0]])
    # column 0: sum 3 → + (model 0 agrees); count 1 - 2 < 0 → - (models 1, 2 agree)
    # column 1: + either way; a zero entry never agrees
    # column 2: sum 0 and count 1 - 1 = 0 both elect + (model 0 agrees)
    assert consensus_mask(deltas, "sum").tolist() == [
        [True, False, True],
        [False, True, False],
        [False, False, False],
    ]
    assert consensus_mask(deltas, "count").tolist() == [
        [False, False, True],
        [True, True, False],
        [True, False, False],
    ]


@pytest.mark.parametrize("name", list(METHODS))
def test_inputs_are_not_modified(name):
    base, models = body(2)
    keep_base, keep_models = base.clone(), models.clone()
    ps = (
        [ModelParams(density=0.5, epsilon=0.1)] * 2
        if name not in ("linear", "task_arithmetic")
        else [ModelParams()] * 2
    )
    METHODS[name].merge(base, models, ps, generators=seeded(1, 2))
    assert torch.equal(base, keep_base) and torch.equal(models, keep_models)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["linear", "ties", "dare_ties", "della"])
def test_half_precision_inputs_are_merged_in_float32(name, dtype):
    base, models = body(2)
    base, models = base.to(dtype), models.to(dtype)
    ps = [ModelParams(weight=1.0, density=0.5), ModelParams(weight=0.5, density=0.3)]
    low = METHODS[name].merge(base, models, ps, generators=seeded(1, 2))
    wide = METHODS[name].merge(base.float(), models.float(), ps, generators=seeded(1, 2))
    assert low.dtype == torch.float32 and torch.equal(low, wide)
    double = METHODS[name].merge(base.double(), models.double(), ps, generators=seeded(1, 2))
    assert double.dtype == torch.float64


def errors(name: str, ps, options: MergeOptions | None = None, gens="seeded", n=None):
    base, models = body(len(ps) if n is None else n)
    gens = seeded(*range(len(ps))) if gens == "seeded" else gens
    with pytest.raises(ValueError) as info:
        METHODS[name].merge(base, models, ps, options or MergeOptions(), gens)
    return str(info.value)


@pytest.mark.parametrize("density", [0.0, -0.2, 1.5])
def test_bad_density_names_the_model_and_the_range(density):
    message = errors("ties", [ModelParams(), ModelParams(density=density)])
    assert f"models[1].parameters.density = {density}" in message
    assert "(0, 1]" in message and "set density" in message


def test_bad_epsilon_names_the_allowed_range():
    message = errors("della", [ModelParams(density=0.1, epsilon=0.15)])
    assert "models[0].parameters.epsilon = 0.15" in message
    assert "density ± epsilon" in message and "choose epsilon in [0, 0.1)" in message
    # density 1 prunes nothing, so epsilon is not checked
    base, models = body(1)
    METHODS["della"].merge(base, models, [ModelParams(density=1.0, epsilon=0.9)])


def test_bad_gamma_names_the_range():
    message = errors("breadcrumbs", [ModelParams(density=0.5, gamma=1.0)])
    assert "models[0].parameters.gamma = 1.0" in message and "[0, 1)" in message


def test_zero_weight_sum_in_a_soup_asks_for_a_fix():
    message = errors("linear", [ModelParams(weight=1.0), ModelParams(weight=-1.0)])
    assert "weight" in message and "sum" in message and "normalize" in message
    _, models = body(2)
    ps = [ModelParams(weight=1.0), ModelParams(weight=-1.0)]
    got = METHODS["linear"].merge(None, models, ps, MergeOptions(normalize=False))
    torch.testing.assert_close(got, models[0] - models[1])


def test_unknown_method_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        get_method("tie")
    assert "'tie'" in str(info.value)
    assert all(name in str(info.value) for name in METHODS)


def test_random_method_without_generator_says_what_to_pass():
    message = errors("dare_ties", [ModelParams(density=0.5)], gens=None)
    assert "generators[0]" in message and "torch.Generator" in message
    # density 1 draws nothing, so no generator is needed
    base, models = body(1)
    METHODS["dare_ties"].merge(base, models, [ModelParams()])


def test_shape_base_and_option_mistakes_are_named():
    assert "tensors" in errors("ties", [ModelParams()] * 2, n=3)
    with pytest.raises(ValueError, match="base: got None"):
        METHODS["ties"].merge(None, body(1)[1], [ModelParams()])
    assert "lambda" in errors("linear", [ModelParams()], MergeOptions(lambda_=2.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(METHODS))
def test_cuda_matches_cpu_for_deterministic_methods_and_keeps_rates(name):
    base, models = body(3)
    ps = [
        ModelParams(weight=w, density=d, epsilon=0.1) for w, d in [(1, 0.5), (0.5, 0.3), (2, 0.7)]
    ]
    cuda_gens = [torch.Generator(device="cuda").manual_seed(s) for s in (1, 2, 3)]
    on_gpu = METHODS[name].merge(base.cuda(), models.cuda(), ps, generators=cuda_gens).cpu()
    if not METHODS[name].is_random:
        torch.testing.assert_close(on_gpu, METHODS[name].merge(base, models, ps), atol=1e-6, rtol=0)
    x = torch.randn(100_000, device="cuda")
    assert int(magnitude_mask(x, 0.3).sum()) == 30_000
    kept = random_(torch.ones(100_000, device="cuda"), 0.5, cuda_gens[0])
    assert abs(kept.mean().item() - 0.5) < 0.02
