"""Head alignment with the merged body's task vector scaled (``scale``), fixed or chosen by GCV.

The references here are independent of hm3: a scaled copy of the merged checkpoint built with
safetensors and plain name matching, features captured with a forward hook on that copy, a
ridge fit and a GCV score computed in numpy.
"""

from __future__ import annotations

import functools
import json
import math
import shutil

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from hm3.alignment.api import align, collect
from hm3.alignment.fit import AUTO_RIDGES
from hm3.alignment.scale import SCALE_GRID
from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.merging.config import AlignConfig, MergeConfig
from hm3.model.classifier import load
from hm3.recipe import merge
from test_alignment import (
    FIT,
    HELD_OUT,
    SEGMENTS,
    assert_applies_fit,
    merge_models,
    one_task_merged,
    original_logits,
    projection_input,
    projection_name,
    ridge_fit,
    write_texts,
)
from test_cli import expect_user_error
from tiny import write_merge_yaml

pytestmark = pytest.mark.usefixtures("one_thread")


def scaled_copy(merged, base, scale, dest):
    """Reference: ``merged`` with every tensor the base also has (same name, or the name
    without its first component; same shape) at base + scale·(merged − base)."""
    shutil.copytree(merged, dest)
    state = load_file(str(merged / "model.safetensors"))
    theirs = load_file(str(base / "model.safetensors"))
    skip = set(projection_name(merged))
    scaled = {}
    for name, value in state.items():
        for candidate in (name, name.partition(".")[2]):
            b = theirs.get(candidate)
            if name not in skip and b is not None and b.shape == value.shape:
                if value.dtype.is_floating_point:
                    scaled[name] = (b + scale * (value - b)).to(value.dtype)
                break
    save_file({**state, **scaled}, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest, set(scaled)


@pytest.fixture(scope="module")
def merged_of(zoo_of, tmp_path_factory):
    """A task-arithmetic merge of the tiny zoo per family (built once), and the fitting texts."""

    @functools.cache
    def get(family):
        zoo = zoo_of(family)
        root = tmp_path_factory.mktemp(f"scale-{family}")
        merged = merge_models(root / "merged", zoo, zoo.models, "task_arithmetic")
        return zoo, merged, write_texts(root / "fit.jsonl", FIT)

    return get


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_fixed_scale_writes_the_scaled_body_and_heads_fitted_on_it(merged_of, tmp_path, family):
    zoo, merged, texts = merged_of(family)
    result = align(merged, texts, tmp_path / "out", ridge=0.03, scale=1.5, progress=False)
    assert result.scale == 1.5
    reference, names = scaled_copy(merged, zoo.base, 1.5, tmp_path / "ref")
    assert names  # the body, and (RoBERTa with a bare base) not classifier.dense
    if family == "roberta":
        assert "classifier.dense.weight" not in names
    got = load_file(str(result.path / "model.safetensors"))
    want = load_file(str(reference / "model.safetensors"))
    before = load_file(str(merged / "model.safetensors"))
    head = set(projection_name(merged))
    for name, value in got.items():
        if name in head:
            continue
        expected = want[name] if name in names else before[name]
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-6, msg=name)
    # the head: a ridge fit on the scaled body's features, applied to them
    x, _ = projection_input(reference, FIT)
    y = original_logits(zoo, FIT)
    for seg in SEGMENTS:
        b, _ = ridge_fit(x, y[:, seg], ridge=0.03)
        assert_applies_fit(b, reference, result.path, seg)
    record = json.loads((result.path / "config.json").read_text())["hm3"]["align"]
    assert record["scale"] == 1.5 and record["scaled_tensors"] == len(names)
    assert "scale_scores" not in record
    assert "multiplied by 1.5" in (result.path / "README.md").read_text()


def reference_score(x, y):
    """Σ over tasks of min over the ridge grid of n·SSE/(n − dof)², over Σ (y − ȳ)²/n."""
    n, d = x.shape
    xc = x - x.mean(axis=0)
    total = 0.0
    for seg in SEGMENTS:
        yc = y[:, seg] - y[:, seg].mean(axis=0)
        best = math.inf
        for ridge in AUTO_RIDGES:
            lam = ridge * np.trace(xc.T @ xc) / d
            hat = xc @ np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T)
            sse = float(((yc - hat @ yc) ** 2).sum())
            dof = 1 + float(np.trace(hat))
            best = min(best, n * sse / (n - dof) ** 2)
        total += best / (float((yc**2).sum()) / n)
    return total


def test_auto_scale_picks_the_lowest_cross_validation_score(merged_of, tmp_path):
    zoo, merged, texts = merged_of("bert")
    result = align(merged, texts, tmp_path / "out", scale="auto", progress=False)
    record = json.loads((result.path / "config.json").read_text())["hm3"]["align"]
    scores = {float(s): v for s, v in record["scale_scores"].items()}
    assert sorted(scores) == sorted(SCALE_GRID)
    y = original_logits(zoo, FIT)
    for s in (0.5, 1.0, 2.0):
        ref, _ = scaled_copy(merged, zoo.base, s, tmp_path / f"ref-{s}")
        x, _ = projection_input(ref, FIT)
        assert scores[s] == pytest.approx(reference_score(x, y), rel=2e-3), s
    assert result.scale == record["scale"] == min(scores, key=scores.get)
    # the statistics of the same pass, folded into the merged model in memory, give the same model
    stats = collect(merged, texts, scale="auto", progress=False, device="cpu").at_scale("auto")
    assert stats.scale == result.scale
    clf = load(merged, device="cpu")
    stats.fold(clf, stats.solve())
    aligned = load(result.path, device="cpu")
    np.testing.assert_allclose(clf.logits(HELD_OUT), aligned.logits(HELD_OUT), atol=1e-4)


def test_auto_scale_leaves_a_self_merge_as_it_is(zoo_of, tmp_path):
    zoo = zoo_of("bert")
    merged = merge_models(tmp_path / "self", zoo, [zoo.models[1]], "linear")
    texts = write_texts(tmp_path / "fit.jsonl", FIT)
    result = align(merged, texts, tmp_path / "out", scale="auto", progress=False)
    assert result.scale == 1.0
    record = json.loads((result.path / "config.json").read_text())["hm3"]["align"]
    assert min(record["scale_scores"].values()) == record["scale_scores"]["1"]
    assert "kept as merged: scale 1" in (result.path / "README.md").read_text()
    merged_state = load_file(str(merged / "model.safetensors"))
    aligned_state = load_file(str(result.path / "model.safetensors"))
    head = set(projection_name(merged))
    assert all(torch.equal(v, merged_state[k]) for k, v in aligned_state.items() if k not in head)


@pytest.mark.parametrize("scale", [0, -1, math.nan, math.inf, "big"])
def test_a_bad_scale_is_refused_before_anything_is_written(merged_of, tmp_path, scale):
    _, merged, texts = merged_of("bert")
    with pytest.raises(Hm3Error, match=r"^scale=.*: expected a finite number > 0"):
        align(merged, texts, tmp_path / "out", scale=scale, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValidationError, match="expected a finite number > 0 or auto"):
        AlignConfig(texts="t.jsonl", scale=scale)


def test_scale_without_a_base_names_the_fix(zoo_of, tmp_path):
    zoo = zoo_of("bert")
    merged = one_task_merged(zoo.models[0], tmp_path / "one")  # records no merge, so no base
    texts = write_texts(tmp_path / "fit.jsonl", FIT)
    with pytest.raises(Hm3Error, match=r"records no base model.*pass base_model=DIR"):
        align(merged, texts, tmp_path / "out", scale=1.5, progress=False)
    assert not (tmp_path / "out").exists()
    # given the base, it runs
    result = align(merged, texts, tmp_path / "out", scale=1.5, base_model=zoo.base, progress=False)
    assert result.scale == 1.5


def test_a_base_of_another_model_is_refused(merged_of, zoo_of, tmp_path):
    _, merged, texts = merged_of("bert")
    other = zoo_of("roberta").base
    with pytest.raises(Hm3Error, match=r"pass base_model=DIR with the model the merge started"):
        align(merged, texts, tmp_path / "out", scale="auto", base_model=other, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_and_recipe_take_the_scale(merged_of, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    zoo, merged, texts = merged_of("bert")
    expect_user_error(capsys, tmp_path, "align", merged, "--texts", texts, "--scale", "0",
                      "--out", tmp_path / "bad", match="expected a finite number > 0 or auto",
                      names="--scale 0:", watch=(merged, texts))  # fmt: skip
    args = ["align", str(merged), "--texts", str(texts), "--scale", "1.5", "--base", str(zoo.base)]
    with pytest.raises(SystemExit) as done:
        main([*args, "--out", str(tmp_path / "cli"), "--no-progress"])
    assert done.value.code in (0, None)
    assert "body task vector × 1.5" in capsys.readouterr().err
    # the merge recipe: align.scale, with the recipe's own base
    cfg = write_merge_yaml(
        tmp_path / "merge.yaml",
        zoo.base,
        zoo.models,
        "task_arithmetic",
        align={"texts": str(texts), "scale": 1.5, "ridge": 0.03},
    )
    result = merge(MergeConfig.from_yaml(cfg), tmp_path / "recipe", progress=False)
    assert result.alignment is not None and result.alignment.scale == 1.5
    cli = load_file(str(tmp_path / "cli" / "model.safetensors"))
    via_recipe = load_file(str(tmp_path / "recipe" / "model.safetensors"))
    direct = align(merged, texts, tmp_path / "direct", scale=1.5, ridge=0.03, progress=False)
    want = load_file(str(direct.path / "model.safetensors"))
    assert all(torch.equal(via_recipe[k], want[k]) for k in want)
    head = set(projection_name(merged))
    assert all(torch.equal(cli[k], want[k]) for k in want if k not in head)
