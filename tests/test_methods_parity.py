"""Parity of hm3.methods with mergekit 0.1.5's own method objects on HM3-shaped inputs.

mergekit is a required test dependency (the tool the paper used), so nothing here is skipped.
Random methods are compared with identical masks: while mergekit runs, ``torch.bernoulli`` is
patched so that its j-th draw uses a generator seeded like ours for the j-th model that draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from mergekit.merge_methods import registry as mergekit_registry
from mergekit.merge_methods.base import TensorGroup

from hm3.methods import METHODS, MergeOptions, ModelParams

TOL = 1e-6
SEEDS = (11, 22, 33)
SEGMENTS = ((0, 2), (2, 5), (5, 9))  # HM3 label segments: 2 + 3 + 4 labels
RANDOM = ("dare_ties", "dare_linear", "della", "della_linear")
MAGNITUDE = ("ties", "breadcrumbs", "breadcrumbs_ties")

PARAMS = {
    "two": [
        ModelParams(weight=1.0, density=0.5, gamma=0.02, epsilon=0.1),
        ModelParams(weight=0.6, density=0.3, gamma=0.05, epsilon=0.2),
    ],
    "three": [
        ModelParams(weight=1.0, density=0.7, gamma=0.01, epsilon=0.15),
        ModelParams(weight=0.5, density=0.4, gamma=0.03, epsilon=0.1),
        ModelParams(weight=2.0, density=0.25, gamma=0.0, epsilon=0.2),
    ],
    # one model keeps everything (so draws no mask) and one weight is negative
    "mixed": [
        ModelParams(weight=1.2, density=1.0),
        ModelParams(weight=-0.5, density=0.6, gamma=0.02, epsilon=0.3),
        ModelParams(weight=0.8, density=0.35, gamma=0.01, epsilon=0.05),
    ],
}
OPTIONS = {
    "defaults": MergeOptions(),
    "normalize-no-rescale": MergeOptions(normalize=True, rescale=False, lambda_=0.8),
    "no-normalize-rescale": MergeOptions(normalize=False, rescale=True, lambda_=1.3),
}


def hm3_shaped(n: int) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
    """Base and n model tensors: a body weight, a body bias, a padded head and head bias."""
    gen = torch.Generator().manual_seed(1234 + n)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    body, bias = randn(64, 32), randn(64)
    out = {
        "body": (body, [body + randn(64, 32, scale=0.05) for _ in range(n)]),
        "bias": (bias, [bias + randn(64, scale=0.05) for _ in range(n)]),
    }
    heads, head_biases = [], []
    for start, stop in SEGMENTS[:n]:  # nonzero rows only inside the model's own segment
        head, head_bias = torch.zeros(9, 32), torch.zeros(9)
        head[start:stop] = randn(stop - start, 32, scale=0.5)
        head_bias[start:stop] = randn(stop - start, scale=0.5)
        heads.append(head)
        head_biases.append(head_bias)
    out["head"] = (torch.zeros(9, 32), heads)  # HM3 gives the base an all-zero head
    out["head_bias"] = (torch.zeros(9), head_biases)
    return out


def mergekit_merge(
    name: str,
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    params: Sequence[ModelParams],
    options: MergeOptions,
) -> torch.Tensor:
    """Run mergekit's registered method object on raw tensors (one TensorGroup)."""
    method = mergekit_registry.get(name)
    accepted = {p.name for p in method.spec.parameters}
    if name == "linear":  # no base; weight is bound per input
        group = TensorGroup.from_tensors(list(models))
    else:
        group = TensorGroup.from_tensors([base, *models], base_index=0)
    parameters: dict[str, object] = {
        key: [getattr(p, key) for p in params]
        for key in ("weight", "density", "gamma", "epsilon")
        if key in accepted
    }
    for key, value in (
        ("normalize", options.normalize),
        ("rescale", options.rescale),
        ("lambda", options.lambda_),
    ):
        if key in accepted and value is not None:
            parameters[key] = value
    (merged,) = method((group,), parameters=parameters)
    return merged


#: RegMean is not in mergekit 0.1.5; tests/test_regmean.py checks it against its closed form
MERGEKIT_METHODS = [name for name, m in METHODS.items() if m.in_mergekit]


def mergekit_with_our_masks(monkeypatch, draw_seeds: Sequence[int], run):
    """Call ``run()`` with mergekit's j-th ``torch.bernoulli`` draw seeded by draw_seeds[j]."""
    real = torch.bernoulli
    generators = iter([torch.Generator().manual_seed(s) for s in draw_seeds])
    calls = []

    def seeded_bernoulli(probs, *args, **kwargs):
        assert not args and kwargs.get("generator") is None, "mergekit draws from global RNG"
        calls.append(probs.shape)
        return real(probs, generator=next(generators))

    with monkeypatch.context() as patch:
        patch.setattr(torch, "bernoulli", seeded_bernoulli)
        result = run()
    assert len(calls) == len(draw_seeds), "mergekit drew a different number of masks"
    return result


def at_density_one(params: Sequence[ModelParams]) -> list[ModelParams]:
    return [ModelParams(weight=p.weight, gamma=p.gamma, epsilon=p.epsilon) for p in params]


def check_parity(monkeypatch, name: str, params: Sequence[ModelParams], options: MergeOptions):
    method = METHODS[name]
    if method.kernel == "linear":
        options = MergeOptions(normalize=options.normalize)
    elif "rescale" not in method.global_parameters:  # task_arithmetic prunes nothing to rescale
        options = MergeOptions(normalize=options.normalize, lambda_=options.lambda_)
    draw_seeds = [s for s, p in zip(SEEDS, params, strict=False) if p.density < 1]
    for kind, (base, models) in hm3_shaped(len(params)).items():
        generators = [torch.Generator().manual_seed(s) for s in SEEDS[: len(params)]]
        ours = method.merge(base, torch.stack(models), params, options, generators)

        def theirs(base=base, models=models):
            return mergekit_merge(name, base, models, params, options)

        if method.is_random:
            expected = mergekit_with_our_masks(monkeypatch, draw_seeds, theirs)
        else:
            expected = theirs()
        assert ours.dtype == expected.dtype == torch.float32
        diff = (ours - expected).abs().max().item()
        assert diff <= TOL, f"{name} on {kind}: max abs diff {diff:.3g} > {TOL}"
        assert not torch.equal(ours, base), f"{name} on {kind}: merge changed nothing"


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("name", MERGEKIT_METHODS)
def test_parity_at_density_one(monkeypatch, name, params, options):
    check_parity(monkeypatch, name, at_density_one(params), options)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("name", MAGNITUDE + RANDOM)
def test_parity_below_density_one(monkeypatch, name, params, options):
    check_parity(monkeypatch, name, params, options)


def test_every_method_is_checked_against_mergekit():
    assert set(MERGEKIT_METHODS) == {"linear", "task_arithmetic", *MAGNITUDE, *RANDOM}
    for name in MERGEKIT_METHODS:
        method = METHODS[name]
        spec = mergekit_registry.get(name).spec
        assert spec.reference_url == method.reference
        defaults = {p.name: p.default for p in spec.parameters}
        assert defaults["normalize"] == method.default_normalize, name
        if method.kernel != "linear":
            assert defaults["rescale"] == method.default_rescale, name
            mergekit_reads = {"weight", "density", "gamma", "epsilon"} & set(defaults)
            assert method.per_model_parameters <= mergekit_reads, name


def test_injected_masks_are_really_used(monkeypatch):
    """The injection is not vacuous: other seeds give mergekit a different result."""
    params = PARAMS["two"]
    base, models = hm3_shaped(2)["body"]
    generators = [torch.Generator().manual_seed(s) for s in SEEDS[:2]]
    ours = METHODS["dare_ties"].merge(base, torch.stack(models), params, generators=generators)
    other = mergekit_with_our_masks(
        monkeypatch,
        [5, 6],
        lambda: mergekit_merge("dare_ties", base, models, params, MergeOptions()),
    )
    assert (ours - other).abs().max().item() > 1e-3
