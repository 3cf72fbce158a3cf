"""hm3.methods on hand-worked examples: every method, with the arithmetic in the comments.

Shared example (2 models, 2×3 tensors): θ_i = B + τ_i with
    B  = [[1, 2, 3], [4, 5, 6]]
    τ1 = [[ 3.0, -1.0, 2.0], [-4.0, 0.5,  1.25]]     |τ1| ascending: .5 1 1.25 2 3 4
    τ2 = [[-3.5, -2.5, 0.5], [ 1.5, 1.0, -3.0 ]]     |τ2| ascending: .5 1 1.5 2.5 3 3.5
Random methods at density < 1 use masks drawn exactly as the contract says (one
``torch.bernoulli(probs, generator=g_i)`` per model), so the expected values stay hand-checkable.
"""

from __future__ import annotations

import torch
from torch.testing import assert_close

from hm3.methods import METHODS, MergeOptions, ModelParams, della_probabilities

B = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
TAU1 = torch.tensor([[3.0, -1.0, 2.0], [-4.0, 0.5, 1.25]])
TAU2 = torch.tensor([[-3.5, -2.5, 0.5], [1.5, 1.0, -3.0]])
MODELS = torch.stack([B + TAU1, B + TAU2])


def params(*weights: float, **kw: float) -> list[ModelParams]:
    return [ModelParams(weight=w, **kw) for w in weights]


def merged_delta(name: str, ps, options: MergeOptions | None = None, gens=None):
    return METHODS[name].merge(B, MODELS, ps, options or MergeOptions(), gens) - B


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_linear_is_a_weighted_average_of_the_models():
    # w = (1, 3): (1·θ1 + 3·θ2)/4 = B + (τ1 + 3τ2)/4
    # τ1 + 3τ2 = [[3-10.5, -1-7.5, 2+1.5], [-4+4.5, .5+3, 1.25-9]]
    #          = [[-7.5, -8.5, 3.5], [.5, 3.5, -7.75]]
    # /4 = [[-1.875, -2.125, .875], [.125, .875, -1.9375]]; + B:
    expected = torch.tensor([[-0.875, -0.125, 3.875], [4.125, 5.875, 4.0625]])
    assert_close(METHODS["linear"].merge(None, MODELS, params(1, 3)), expected)
    # normalize off: 1·θ1 + 3·θ2 = 4B + (τ1 + 3τ2)
    expected = torch.tensor([[-3.5, -0.5, 15.5], [16.5, 23.5, 16.25]])
    got = METHODS["linear"].merge(None, MODELS, params(1, 3), MergeOptions(normalize=False))
    assert_close(got, expected)


def test_linear_soup_shrinks_each_padded_head_by_its_weight_share():
    # HM3 heads: model A owns rows 0-1, model B row 2; w = (1, 1) halves every row
    head_a = torch.tensor([[3.0, -1.0], [2.0, 4.0], [0.0, 0.0]])
    head_b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [-5.0, 1.0]])
    got = METHODS["linear"].merge(None, torch.stack([head_a, head_b]), params(1, 1))
    assert_close(got, torch.tensor([[1.5, -0.5], [1.0, 2.0], [-2.5, 0.5]]))


def test_task_arithmetic_adds_weighted_task_vectors():
    # w = (1, .5): τ1 + .5τ2 = [[3-1.75, -1-1.25, 2+.25], [-4+.75, .5+.5, 1.25-1.5]]
    expected = torch.tensor([[1.25, -2.25, 2.25], [-3.25, 1.0, -0.25]])
    assert_close(merged_delta("task_arithmetic", params(1, 0.5)), expected)
    # lambda = 2 doubles the merged task vector
    assert_close(
        merged_delta("task_arithmetic", params(1, 0.5), MergeOptions(lambda_=2)), 2 * expected
    )
    # normalize divides by Σw = 1.5
    got = merged_delta("task_arithmetic", params(1, 0.5), MergeOptions(normalize=True))
    assert_close(got, expected / 1.5)


def test_ties_trims_elects_signs_and_averages_agreeing_models():
    # density .5 keeps k = max(1, ⌊.5·6⌋) = 3 entries per model:
    #   τ̂1 = [[3, 0, 2], [-4, 0, 0]]          (4, 3, 2 kept; 1.25, 1, .5 trimmed)
    #   τ̂2 = [[-3.5, -2.5, 0], [0, 0, -3]]    (3.5, 3, 2.5 kept)
    # w = (1, 1): Σ = [[-.5, -2.5, 2], [-4, 0, -3]] → γ = [[-, -, +], [-, + (0 → +), -]]
    # τ̂1[0,0] = 3 disagrees with γ = - and is dropped; every other kept entry agrees.
    # divisor = Σ weights of agreeing models = [[1, 1, 1], [1, 0 → 1, 1]]
    expected = torch.tensor([[-3.5, -2.5, 2.0], [-4.0, 0.0, -3.0]])
    assert_close(merged_delta("ties", params(1, 1, density=0.5)), expected)


def test_ties_applies_weights_before_the_sign_vote():
    # w = (2, 1): weighted τ̂1[0,0] = 6 beats τ̂2[0,0] = -3.5 (Σ = 2.5 → γ = +), so now model 1
    # wins that entry: 6 / 2 = 3. Elsewhere weights cancel: e.g. [0,2]: (2·2)/2 = 2.
    expected = torch.tensor([[3.0, -2.5, 2.0], [-4.0, 0.0, -3.0]])
    assert_close(merged_delta("ties", params(2, 1, density=0.5)), expected)


def test_ties_trims_padded_head_zeros_as_if_they_were_weights():
    # An HM3 head of 3 labels × 2 features: A owns rows 0-1, B row 2; the base head is zero.
    head_a = torch.tensor([[3.0, -1.0], [2.0, 4.0], [0.0, 0.0]])
    head_b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [-5.0, 1.0]])
    heads, zero = torch.stack([head_a, head_b]), torch.zeros(3, 2)
    # density .5 → k = ⌊.5·6⌋ = 3 of the 6 entries, padded zeros included:
    #   A has 4 real weights and keeps 3 (4, 3, 2): its -1 is trimmed;
    #   B has 2 real weights and keeps both (5, 1, plus a padded zero).
    # No entry is shared, so each survives alone and TIES divides it by its own weight.
    got = METHODS["ties"].merge(zero, heads, params(1, 1, density=0.5))
    assert_close(got, torch.tensor([[3.0, 0.0], [2.0, 4.0], [-5.0, 1.0]]))
    # density .25 → k = max(1, ⌊1.5⌋) = 1: A keeps only 4, B only -5
    got = METHODS["ties"].merge(zero, heads, params(2, 1, density=0.25))
    assert_close(got, torch.tensor([[0.0, 0.0], [0.0, 4.0], [-5.0, 0.0]]))


def test_dare_ties_at_density_one_is_an_untrimmed_sign_vote_without_normalising():
    # no drop; w = (1, 1): Σ = τ1 + τ2 = [[-.5, -3.5, 2.5], [-2.5, 1.5, -1.75]]
    # γ = [[-, -, +], [-, +, -]]; disagreeing: τ1[0,0] = 3, τ2[1,0] = 1.5, τ1[1,2] = 1.25
    # sum of agreeing: [[-3.5, -1-2.5, 2+.5], [-4, .5+1, -3]]; normalize is off by default
    expected = torch.tensor([[-3.5, -3.5, 2.5], [-4.0, 1.5, -3.0]])
    assert_close(merged_delta("dare_ties", params(1, 1)), expected)
    # normalize on: divide by the agreeing weights [[1, 2, 2], [1, 2, 1]]
    got = merged_delta("dare_ties", params(1, 1), MergeOptions(normalize=True))
    assert_close(got, torch.tensor([[-3.5, -1.75, 1.25], [-4.0, 0.75, -3.0]]))


def test_della_at_density_one_normalises_by_default():
    # same vote as dare_ties, but DELLA normalises by default
    expected = torch.tensor([[-3.5, -1.75, 1.25], [-4.0, 0.75, -3.0]])
    assert_close(merged_delta("della", params(1, 1)), expected)
    # della_linear: plain weighted sum, w = (1, .5) as in task arithmetic
    expected = torch.tensor([[1.25, -2.25, 2.25], [-3.25, 1.0, -0.25]])
    assert_close(merged_delta("della_linear", params(1, 0.5)), expected)


def test_dare_linear_keeps_bernoulli_entries_and_restores_the_l1_norm():
    # one model, density .5: m = bernoulli(.5) drawn with the model's generator, then
    # τ̂ = τ1 ⊙ m · ‖τ1‖₁ / ‖τ1 ⊙ m‖₁ with ‖τ1‖₁ = 3 + 1 + 2 + 4 + .5 + 1.25 = 11.75
    mask = torch.bernoulli(torch.full((2, 3), 0.5), generator=seeded(7)[0])
    assert 0 < mask.sum() < 6, "pick a seed whose mask keeps some and drops some"
    kept = TAU1 * mask
    expected = 2.0 * kept * (11.75 / kept.abs().sum())  # w = 2, no normalisation
    got = METHODS["dare_linear"].merge(B, MODELS[:1], params(2, density=0.5), generators=seeded(7))
    assert_close(got - B, expected)
    # rescale off: the kept entries are not scaled up
    got = METHODS["dare_linear"].merge(
        B, MODELS[:1], params(2, density=0.5), MergeOptions(rescale=False), seeded(7)
    )
    assert_close(got - B, 2.0 * kept)


def test_dare_ties_on_one_model_keeps_its_rescaled_entries():
    # with one model every kept entry agrees with the elected sign; normalize is off
    mask = torch.bernoulli(torch.full((2, 3), 0.5), generator=seeded(3)[0])
    kept = TAU2 * mask  # ‖τ2‖₁ = 3.5 + 2.5 + .5 + 1.5 + 1 + 3 = 12
    expected = 0.5 * kept * (12.0 / kept.abs().sum())
    got = METHODS["dare_ties"].merge(B, MODELS[1:], params(0.5, density=0.5), generators=seeded(3))
    assert_close(got - B, expected)


def test_della_probabilities_follow_the_magnitude_rank_in_each_row():
    # row [3, -1, 2] → ranks of |.| = [3, 1, 2] → (r-1)/(m-1) = [1, 0, .5]
    # p = (d - ε) + 2ε·that = .3 + .4·[1, 0, .5] = [.7, .3, .5]  (d = .5, ε = .2)
    # row [-4, .5, 1.25] has the same rank order
    assert_close(della_probabilities(TAU1, 0.5, 0.2), torch.tensor([[0.7, 0.3, 0.5]] * 2))
    # a 1-D tensor is one row: |[1, -3, 2, .5]| ranks [2, 4, 3, 1] → [1/3, 1, 2/3, 0]
    # p = .35 + .3·that = [.45, .65, .55, .35]  (d = .5, ε = .15)
    got = della_probabilities(torch.tensor([1.0, -3.0, 2.0, 0.5]), 0.5, 0.15)
    assert_close(got, torch.tensor([0.45, 0.65, 0.55, 0.35]))
    # a row of one entry has no rank spread: p = d (mergekit fails here with 0/0)
    assert_close(
        della_probabilities(torch.tensor([[2.0], [-1.0]]), 0.4, 0.1), torch.full((2, 1), 0.4)
    )


def test_della_draws_with_rank_probabilities_and_rescales():
    # della_linear, one model, w = 1: m ~ bernoulli([[.7, .3, .5]] * 2) from the model's generator
    probs = torch.tensor([[0.7, 0.3, 0.5]] * 2)
    mask = torch.bernoulli(probs, generator=seeded(5)[0])
    assert 0 < mask.sum() < 6
    kept = TAU1 * mask
    expected = kept * (11.75 / kept.abs().sum())
    got = METHODS["della_linear"].merge(
        B, MODELS[:1], params(1, density=0.5, epsilon=0.2), generators=seeded(5)
    )
    assert_close(got - B, expected)
    # della (TIES vote + normalise) on one model: w cancels, τ̂ is unchanged
    got = METHODS["della"].merge(
        B, MODELS[:1], params(3, density=0.5, epsilon=0.2), generators=seeded(5)
    )
    assert_close(got - B, expected)


def test_breadcrumbs_drops_the_largest_and_the_smallest_entries():
    # density .5, gamma .2, n = 6: keep ⌊3⌋ = 3, drop the ⌊1.2⌋ = 1 largest and 6-3-1 = 2 smallest
    #   τ1: drop .5, 1 and 4 → τ̂1 = [[3, 0, 2], [0, 0, 1.25]]
    #   τ2: drop .5, 1 and 3.5 → τ̂2 = [[0, -2.5, 0], [1.5, 0, -3]]
    # breadcrumbs (no vote, no normalisation): τ̂1 + τ̂2
    expected = torch.tensor([[3.0, -2.5, 2.0], [1.5, 0.0, -1.75]])
    assert_close(merged_delta("breadcrumbs", params(1, 1, density=0.5, gamma=0.2)), expected)
    # breadcrumbs_ties: γ[1,2] = sign(1.25 - 3) = -, so τ̂1's 1.25 is dropped there
    expected = torch.tensor([[3.0, -2.5, 2.0], [1.5, 0.0, -3.0]])
    assert_close(merged_delta("breadcrumbs_ties", params(1, 1, density=0.5, gamma=0.2)), expected)
