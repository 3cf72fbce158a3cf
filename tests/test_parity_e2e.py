"""End to end: `hm3 merge` on the originals equals mergekit 0.1.5 on `hm3 expand`'s output.

For every merge method (random ones at density 1, so both sides draw the same all-ones masks)
and a few option variants, tiny BERT and RoBERTa classifiers are merged twice: by ``hm3 merge``
from the original checkpoints, and by mergekit's own ``run_merge`` on the HM3-expanded inputs
and the ``mergekit.yaml`` that ``hm3 expand`` writes. Every tensor must agree to 1e-6, for a
classifier base and for a bare-encoder base.

A bare RoBERTa base has no ``classifier.dense``. There mergekit runs the method with the
models' mean as base (the value ``hm3 expand`` writes); ``hm3 merge`` does the same with
``no_base: method`` and keeps the plain mean with the default ``no_base: mean``: then exactly
those tensors differ from mergekit (tested below), except under ``linear``, which reads no base.
"""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
from safetensors.torch import load_file

from hm3.merging.config import MergeConfig
from hm3.merging.expanded import expand
from hm3.merging.stream import merge

TOL = 1e-6
WEIGHTS = (1.0, 0.6, 1.4)
CASES = {  # name: (merge_method, parameters)
    "linear": ("linear", {}),
    "linear-unnormalized": ("linear", {"normalize": False}),
    "task_arithmetic": ("task_arithmetic", {}),
    "task_arithmetic-lambda": ("task_arithmetic", {"lambda": 0.7, "normalize": True}),
    "ties": ("ties", {"density": 0.5}),
    "ties-unnormalized-lambda": ("ties", {"density": 0.4, "normalize": False, "lambda": 1.3}),
    "dare_linear": ("dare_linear", {"density": 1.0}),
    "dare_ties": ("dare_ties", {"density": 1.0}),
    "dare_ties-normalize": ("dare_ties", {"density": 1.0, "normalize": True, "lambda": 0.8}),
    "breadcrumbs": ("breadcrumbs", {"density": 0.6, "gamma": 0.05}),
    "breadcrumbs_ties": ("breadcrumbs_ties", {"density": 0.6, "gamma": 0.05}),
    "della": ("della", {"density": 1.0}),
    "della_linear": ("della_linear", {"density": 1.0, "rescale": False}),
}
ROBERTA_NO_BASE = {"classifier.dense.weight", "classifier.dense.bias"}


def _tensors(directory) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def _both(zoo, tmp_path, case: str, no_base: str = "mean"):
    """(hm3 merge of the originals, mergekit merge of `hm3 expand`'s output), as state dicts."""
    method, parameters = CASES[case]
    config = MergeConfig.from_dict(
        {
            "base_model": str(zoo.base),
            "merge_method": method,
            "parameters": parameters,
            "models": [
                {"model": str(m), "parameters": {"weight": w}}
                for m, w in zip(zoo.models, WEIGHTS, strict=True)
            ],
            "no_base": no_base,
        }
    )
    merge(config, tmp_path / "hm3", progress=False)
    expanded = expand(config, tmp_path / "expanded", progress=False)
    recipe = yaml.safe_load((expanded / "mergekit.yaml").read_text(encoding="utf-8"))
    logging.disable(logging.WARNING)  # mergekit logs its progress and its guesses
    try:
        run_merge(
            MergeConfiguration.model_validate(recipe),
            str(tmp_path / "mergekit"),
            options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True),
        )
    finally:
        logging.disable(logging.NOTSET)
    return _tensors(tmp_path / "hm3"), _tensors(tmp_path / "mergekit")


def _diffs(ours: dict, theirs: dict) -> dict[str, float]:
    assert set(ours) == set(theirs)
    return {
        name: (ours[name].double() - theirs[name].double()).abs().max().item()
        for name in ours
        if ours[name].is_floating_point()
    }


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("family", "bare", "no_base"),
    [
        ("bert", True, "mean"),  # a bare BertModel has every body tensor: no_base is moot
        ("bert", False, "mean"),
        ("roberta", False, "mean"),  # a classifier base has classifier.dense
        ("roberta", True, "method"),  # a bare one has not: the method runs on the mean
    ],
)
def test_hm3_merge_equals_mergekit_on_expanded_inputs(
    zoo_factory, tmp_path, case, family, bare, no_base
):
    ours, theirs = _both(zoo_factory(family, bare=bare), tmp_path, case, no_base)
    diffs = _diffs(ours, theirs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= TOL, f"{worst}: max |hm3 - mergekit| = {diffs[worst]:.3g}"


@pytest.mark.parametrize("case", ["task_arithmetic", "ties", "dare_ties", "della", "linear"])
def test_no_base_mean_differs_from_mergekit_only_where_the_base_lacks_a_tensor(
    zoo_factory, tmp_path, case
):
    zoo = zoo_factory("roberta", bare=True)
    ours, theirs = _both(zoo, tmp_path, case, "mean")
    diffs = _diffs(ours, theirs)
    assert all(d <= TOL for name, d in diffs.items() if name not in ROBERTA_NO_BASE)
    originals = [load_file(str(m / "model.safetensors")) for m in zoo.models]
    for name in ROBERTA_NO_BASE:
        stacked = torch.stack([o[name] for o in originals])
        if case == "linear":  # reads no base: the weighted soup, like mergekit's
            assert diffs[name] <= TOL
            soup = sum(w * o[name] for w, o in zip(WEIGHTS, originals, strict=True))
            torch.testing.assert_close(ours[name], soup / sum(WEIGHTS))
        else:  # hm3 keeps the documented plain mean; mergekit runs the method on top of it
            torch.testing.assert_close(ours[name], stacked.mean(0), atol=0, rtol=0)
            assert diffs[name] > 1e-3
