"""TSV-Merge (``merge_method: tsv``): the per-matrix math, hand-worked cases, the whole merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hm3
from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from hm3.merging.expanded import expand
from hm3.methods import METHODS, MergeOptions, ModelParams
from hm3.methods.tsv import finite_svd, polar_factor, singular_merge, tsv_merge
from tiny import FAMILIES, write_merge_yaml

# ---- the math -------------------------------------------------------------------------------


def _stack(n: int, rows: int, cols: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    return base, base + 0.1 * torch.randn(n, rows, cols, generator=gen, dtype=torch.float64)


def _numpy_tsv(base, tensors, weights, lam):
    """The paper's steps 1-4 transcribed independently in NumPy (the reference)."""
    base, tensors = base.numpy(), tensors.numpy()
    n = len(tensors)
    rel = np.asarray(weights) * n / np.sum(weights)
    k = max(1, min(base.shape) // n)
    us, ss, vs = [], [], []
    for theta, w in zip(tensors, rel, strict=True):
        u, s, vt = np.linalg.svd(theta - base, full_matrices=False)
        us.append(u[:, :k])
        ss.append(s[:k] * w)
        vs.append(vt[:k].T)

    def nearest_orthonormal(m):
        p, _, qt = np.linalg.svd(m, full_matrices=False)
        return p @ qt

    u, v = nearest_orthonormal(np.hstack(us)), nearest_orthonormal(np.hstack(vs))
    return torch.from_numpy(base + lam * (u @ np.diag(np.concatenate(ss)) @ v.T))


@pytest.mark.parametrize(("n", "rows", "cols"), [(3, 12, 9), (2, 7, 16), (4, 6, 6), (5, 3, 8)])
def test_matches_a_numpy_transcription_of_the_paper(n, rows, cols):
    base, tensors = _stack(n, rows, cols, seed=n)
    weights = [1.0 + 0.5 * i for i in range(n)]
    got = tsv_merge(base, tensors, weights, lambda_=0.7)
    torch.testing.assert_close(got, _numpy_tsv(base, tensors, weights, 0.7))


def test_one_model_gives_itself():
    base, tensors = _stack(1, 10, 6)
    torch.testing.assert_close(tsv_merge(base, tensors, [2.0]), tensors[0])


def test_copies_of_one_model_give_its_rank_r_over_n_truncation():
    base, tensors = _stack(1, 12, 8, seed=3)
    tau = tensors[0] - base
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    for n in (2, 4):
        k = 8 // n
        got = tsv_merge(base, tensors.expand(n, -1, -1).clone(), [1.0] * n)
        torch.testing.assert_close(got, base + (u[:, :k] * s[:k]) @ vh[:k])


def test_tasks_in_orthogonal_subspaces_add_up_exactly():
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    p, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    taus = torch.stack([  # rank 3 each (k = 6 // 2 = 3), in disjoint row and column spaces
        q[:, :3] @ torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ p[:, :3].T,
        q[:, 3:6] @ torch.diag(torch.tensor([5.0, 0.5, 0.2], dtype=torch.float64)) @ p[:, 3:].T,
    ])  # fmt: skip
    base = torch.randn(8, 6, dtype=torch.float64)
    torch.testing.assert_close(tsv_merge(base, base + taus, [1.0, 1.0]), base + taus.sum(0))


def test_directions_beyond_a_task_matrix_rank_are_dropped():
    gen = torch.Generator().manual_seed(8)
    base = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    low = [torch.randn(16, 2, generator=gen, dtype=torch.float64)
           @ torch.randn(2, 8, generator=gen, dtype=torch.float64) for _ in range(2)]  # fmt: skip
    tensors = base + torch.stack(low)  # rank 2 each, k = 8 // 2 = 4: two triplets are noise
    wide = tsv_merge(base, tensors, [1.0, 1.0])
    narrow = tsv_merge(base.float(), tensors.float(), [1.0, 1.0])
    torch.testing.assert_close(narrow.double(), wide, atol=1e-4, rtol=1e-4)  # not rotated
    us, vs, ss = [], [], []
    for tau in low:  # the reference on the rank-2 parts only
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        us.append(u[:, :2]), ss.append(s[:2]), vs.append(vh[:2].T)
    u, v = polar_factor(torch.cat(us, 1)), polar_factor(torch.cat(vs, 1))
    torch.testing.assert_close(wide, base + (u * torch.cat(ss)) @ v.T)


def test_an_unchanged_model_adds_no_direction():
    base, tensors = _stack(1, 10, 6, seed=4)
    tau = tensors[0] - base
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    got = tsv_merge(base, torch.stack([tensors[0], base]), [1.0, 1.0])
    torch.testing.assert_close(got, base + (u[:, :3] * s[:3]) @ vh[:3])  # k = 6 // 2
    assert torch.equal(tsv_merge(base, torch.stack([base, base]), [1.0, 1.0]), base)


def test_vectors_and_undecomposed_matrices_take_the_weighted_mean_of_task_vectors():
    base, tensors = _stack(3, 5, 4, seed=5)
    mean = base + 0.5 * (tensors - base).mul(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)).sum(0) / 6
    got = tsv_merge(base, tensors, [1.0, 2.0, 3.0], lambda_=0.5, decompose=False)
    torch.testing.assert_close(got, mean.to(torch.float64))
    vec_base, vecs = base[0], tensors[:, 0]
    got = tsv_merge(vec_base, vecs, [1.0, 2.0, 3.0], lambda_=0.5)
    torch.testing.assert_close(got, mean[0].to(torch.float64))


def test_weights_are_relative_and_lambda_scales_the_task_vector():
    base, tensors = _stack(3, 9, 7, seed=6)
    one = tsv_merge(base, tensors, [1.0, 1.0, 1.0])
    torch.testing.assert_close(tsv_merge(base, tensors, [4.0, 4.0, 4.0]), one)
    torch.testing.assert_close(tsv_merge(base, tensors, [1.0] * 3, lambda_=2.0), 2 * one - base)
    assert not torch.allclose(tsv_merge(base, tensors, [1.0, 1.0, 3.0]), one)


def test_polar_factor_is_orthonormal_and_nearest():
    m = torch.randn(9, 4, dtype=torch.float64)
    p = polar_factor(m)
    torch.testing.assert_close(p.T @ p, torch.eye(4, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64))  # another orthonormal one
    assert torch.linalg.norm(m - p) <= torch.linalg.norm(m - q)
    wide = polar_factor(torch.randn(3, 7, dtype=torch.float64))
    torch.testing.assert_close(wide @ wide.T, torch.eye(3, dtype=torch.float64))


def test_dtype_and_inputs_are_kept():
    base, tensors = _stack(2, 6, 5, seed=7)
    before = tensors.clone()
    assert tsv_merge(base, tensors, [1.0, 1.0]).dtype == torch.float64
    assert torch.equal(tensors, before)
    merged = METHODS["tsv"].merge(base.float(), tensors.float(), [ModelParams(), ModelParams()])
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged.double(), tsv_merge(base, tensors, [1.0, 1.0]), atol=1e-5,
                               rtol=1e-4)  # fmt: skip
    assert singular_merge(torch.zeros(2, 3, 3), torch.ones(2)).abs().sum() == 0


def test_half_precision_inputs_and_the_work_buffer_give_the_same_merge():
    base, tensors = _stack(3, 10, 7, seed=9)
    params = [ModelParams(), ModelParams(weight=2.0), ModelParams()]
    reference = METHODS["tsv"].merge(base.float(), tensors.float(), params)
    for dtype in (torch.float16, torch.bfloat16):
        half = METHODS["tsv"].merge(base.to(dtype), tensors.to(dtype), params)
        assert half.dtype == torch.float32  # computed in float32; the caller casts
        torch.testing.assert_close(half, reference, atol=0.05, rtol=0.05)
    buffer = tensors.float().clone()
    again = METHODS["tsv"].merge(base.float(), buffer, params, overwrite=True)
    torch.testing.assert_close(again, reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("params", "options", "message"),
    [
        ([ModelParams(weight=0.0), ModelParams()], MergeOptions(), "weight = 0.0: tsv weights"),
        ([ModelParams(), ModelParams()], MergeOptions(normalize=True), "normalize not used by"),
        ([ModelParams(), ModelParams()], MergeOptions(alpha=0.5), "alpha not used by 'tsv'"),
    ],
)
def test_bad_values_are_named(params, options, message):
    base, tensors = _stack(2, 4, 3)
    with pytest.raises(Hm3Error, match=message):
        METHODS["tsv"].merge(base, tensors, params, options)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"models": [{"model": "a", "parameters": {"weight": -1}}]}, "tsv weights scale each"),
        (
            {"parameters": {"density": 0.5}},
            "density not used by merge_method 'tsv' \\(it uses: "
            "weight; method-wide in parameters: lambda\\)",
        ),
        ({"parameters": {"rescale": True}}, "rescale not used by merge_method 'tsv'"),
    ],
)
def test_config_errors_name_the_key(doc, message):
    data = {"base_model": "b", "merge_method": "tsv", "models": [{"model": "a"}], **doc}
    with pytest.raises(Hm3Error, match=message):
        MergeConfig.from_dict(data)


def test_switches_are_checked_at_load_for_every_method_but_lambda_one_is_no_switch():
    doc = {"base_model": "b", "models": [{"model": "a"}]}
    with pytest.raises(Hm3Error, match="lambda not used by merge_method 'linear'"):
        MergeConfig.from_dict({**doc, "merge_method": "linear", "parameters": {"lambda": 0.5}})
    with pytest.raises(Hm3Error, match="rescale not used by merge_method 'linear'"):
        MergeConfig.from_dict({**doc, "merge_method": "linear", "parameters": {"rescale": True}})
    for method in ("linear", "regmean", "tsv"):  # as MergeMethod.validate: 1 is the default
        extra = {"regmean": {"texts": "t"}} if method == "regmean" else {}
        MergeConfig.from_dict({**doc, **extra, "merge_method": method, "parameters": {"lambda": 1}})


# ---- the whole merge on tiny real checkpoints -----------------------------------------------


def _merged_and_inputs(tmp_path, zoo, models, **extra):
    path = write_merge_yaml(tmp_path / "merge.yaml", zoo.base, models, "tsv", **extra)
    result = hm3.merge(MergeConfig.from_yaml(path), tmp_path / "m", progress=False)
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    return result, merged, load_file(str(zoo.base / "model.safetensors"))


@pytest.mark.parametrize("family", FAMILIES)
def test_one_model_merges_to_its_own_body_for_every_family(zoo_factory, tmp_path, family):
    zoo = zoo_factory(family, bare=False)
    one = zoo.models[1]
    _, merged, _ = _merged_and_inputs(tmp_path, zoo, [one])
    original = load_file(str(one / "model.safetensors"))
    for name, value in original.items():
        if name in merged and merged[name].shape == value.shape and value.is_floating_point():
            torch.testing.assert_close(merged[name], value, atol=2e-5, rtol=1e-4, msg=name)


def test_body_matrices_are_tsv_and_the_head_the_mean_of_task_vectors(bert_zoo, tmp_path):
    models = bert_zoo.models
    result, merged, base = _merged_and_inputs(
        tmp_path, bert_zoo, models, parameters={"lambda": 0.8}
    )
    sds = [load_file(str(m / "model.safetensors")) for m in models]
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    stacked = torch.stack([sd[name] for sd in sds]).double()
    theta_base = base.get(name, base.get(name.removeprefix("bert.")))  # a bare BertModel's keys
    expected = _numpy_tsv(theta_base.double(), stacked, [1.0] * len(models), 0.8)
    torch.testing.assert_close(merged[name].double(), expected, atol=1e-5, rtol=1e-4)
    head = merged["classifier.weight"]
    for task, sd in zip(result.tasks, sds, strict=True):  # base head 0: rows = λ · W_i / n
        rows = sd["classifier.weight"] * 0.8 / len(models)
        torch.testing.assert_close(head[task.start : task.end], rows, atol=1e-6, rtol=1e-5)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["hm3"]["merge"]
    assert meta["method"] == "tsv" and meta["parameters"] == {"lambda": 0.8}
    out = hm3.load(tmp_path / "m", device="cpu").predict(["good great", "buy cheap now"])
    assert set(out[0].tasks) == {t.name for t in result.tasks}


def test_expand_refuses_tsv_with_the_reason(bert_zoo, tmp_path):
    path = write_merge_yaml(tmp_path / "merge.yaml", bert_zoo.base, bert_zoo.models, "tsv")
    with pytest.raises(Hm3Error, match=r"mergekit 0\.1\.5 has no TSV-Merge"):
        expand(MergeConfig.from_yaml(path), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_a_non_finite_float32_svd_is_redone_in_float64(monkeypatch):
    """LAPACK can return NaN singular vectors in float32 (seen on 2 threads, not on 1 or 4)."""
    torch.manual_seed(0)
    taus = torch.randn(3, 12, 9)
    w = torch.ones(3)
    expected = singular_merge(taus, w)
    real_svd = torch.linalg.svd
    calls = []

    def flaky(m, *args, **kwargs):
        u, s, vh = real_svd(m, *args, **kwargs)
        calls.append(m.dtype)
        if m.dtype == torch.float32:
            u = u.clone()
            u[0, 0] = float("nan")
        return u, s, vh

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    torch.testing.assert_close(singular_merge(taus, w), expected, rtol=1e-4, atol=1e-5)
    assert torch.float64 in calls  # every float32 answer was retried
    u, _, _ = finite_svd(taus[0])
    assert u.dtype == torch.float32 and torch.isfinite(u).all()
