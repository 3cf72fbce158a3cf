"""The demo's shared-work predictors give what the public path gives on directories.

``hm3 demo`` scores 18 merged variants by computing each merge's body features once and
applying the merged head and the aligned head to them, and each original's logits once. Here,
on tiny trained models: those logits equal the ones of the merged directory and of the
directory ``hm3 align`` writes, and ``evaluate`` scores them identically.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from hm3.alignment.api import align
from hm3.demo.memo import MemoLogits, SharedBody, fit_alignment
from hm3.evaluation.run import evaluate
from hm3.evaluation.suite import load_suite
from hm3.merging.config import MergeConfig
from hm3.model.classifier import load
from hm3.recipe import merge
from test_alignment import write_texts
from test_evaluation import _one_thread, build_suite  # noqa: F401  (autouse fixture)
from tiny import toy_texts

FIT = toy_texts(80, seed=11)
HELD_OUT = toy_texts(30, seed=12)


@pytest.fixture(scope="module")
def dirs(zoo_factory, tmp_path_factory):
    zoo = zoo_factory("bert", train_steps=40)
    root = tmp_path_factory.mktemp("shared")
    config = MergeConfig.from_dict(
        {
            "base_model": str(zoo.base),
            "merge_method": "ties",
            "parameters": {"density": 0.5},
            "models": [{"model": str(m)} for m in zoo.models],
        }
    )
    merged = merge(config, root / "merged", progress=False).path
    texts = write_texts(root / "fit.jsonl", FIT)
    aligned = align(merged, texts, root / "aligned", ridge=0.3, batch_size=16, progress=False)
    return zoo, merged, aligned.path, root


def _originals(zoo):
    return {m.name: MemoLogits(load(m)) for m in zoo.models}


def test_heads_on_the_shared_body_equal_the_directories(dirs):
    zoo, merged, aligned_dir, _ = dirs
    body = SharedBody(load(merged))
    head = body.head()
    aligned = fit_alignment(body, _originals(zoo), FIT, ridge=0.3, batch_size=7)
    np.testing.assert_allclose(
        head.logits(HELD_OUT), load(merged).logits(HELD_OUT), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        aligned.logits(HELD_OUT), load(aligned_dir).logits(HELD_OUT), rtol=1e-4, atol=1e-4
    )
    assert head.tasks == load(merged).tasks and aligned.path == merged


def test_memo_logits_compute_each_text_once_and_keep_the_order(dirs):
    zoo = dirs[0]
    memo = MemoLogits(load(zoo.models[0]))
    real = memo.clf.logits
    calls = _spied(memo)
    first = memo.logits(["a good", "bad", "a good"])
    again = memo.logits(["bad", "hello world", "a good"])
    assert calls == [["a good", "bad"], ["hello world"]]
    np.testing.assert_allclose(again[[0, 2]], first[[1, 0]])
    np.testing.assert_allclose(first, real(["a good", "bad", "a good"]), rtol=1e-5, atol=1e-5)


def test_evaluate_scores_shared_predictors_like_directories(dirs):
    zoo, merged, aligned_dir, root = dirs
    suite = load_suite(build_suite(root / "suite"))
    originals = _originals(zoo)
    body = SharedBody(load(merged))
    fast = {"ties": body.head(), "ties+align": fit_alignment(body, originals, FIT, 0.3)}
    slow = {"ties": merged, "ties+align": aligned_dir}
    a = evaluate(suite, fast, originals=originals, progress=False)
    b = evaluate(suite, slow, originals={m.name: m for m in zoo.models}, progress=False)
    for name in ("original", "ties", "ties+align"):
        assert a.model(name).average_f1 == pytest.approx(b.model(name).average_f1, abs=1e-12)
        assert a.model(name).tasks == b.model(name).tasks


def _spied(memo):
    calls = []
    real = memo.clf.logits
    memo.clf.logits = lambda texts, batch_size=32: calls.append(list(texts)) or real(texts)
    return calls


def test_memo_store_is_reused_across_runs_and_only_for_the_same_model(dirs, tmp_path, caplog):
    zoo = dirs[0]
    model = tmp_path / "model"
    shutil.copytree(zoo.models[0], model)
    store = tmp_path / "model.logits.npz"
    first = MemoLogits(load(model), store)
    expected = first.logits(FIT[:20])
    first.save()
    assert store.is_file() and FIT[0].encode() not in store.read_bytes()  # digests, not texts
    again = MemoLogits(load(model), store)
    calls = _spied(again)
    np.testing.assert_array_equal(again.logits(FIT[:20]), expected)
    assert calls == []
    again.logits(FIT[:25])
    assert calls == [FIT[20:25]]
    # another truncation length, or changed weights: the store is not used
    shorter = MemoLogits(load(model, max_length=4), store)
    calls = _spied(shorter)
    shorter.logits(FIT[:3])
    assert calls == [FIT[:3]] and "other weights or max_length" in caplog.text
    caplog.clear()
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    changed = MemoLogits(load(model), store)
    calls = _spied(changed)
    changed.logits(FIT[:3])
    assert calls == [FIT[:3]] and "other weights or max_length" in caplog.text


def test_unreadable_memo_store_is_recomputed_with_a_warning(dirs, tmp_path, caplog):
    store = tmp_path / "broken.npz"
    store.write_bytes(b"not a numpy file")
    memo = MemoLogits(load(dirs[0].models[0]), store)
    calls = _spied(memo)
    memo.logits(FIT[:2])
    assert calls == [FIT[:2]] and "unreadable logits store" in caplog.text
    memo.save()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    assert MemoLogits(load(dirs[0].models[0]), store)._saved == 2


def test_auto_ridge_on_the_shared_body_equals_hm3_align(dirs, tmp_path):
    zoo, merged, _, root = dirs
    auto_dir = align(merged, root / "fit.jsonl", tmp_path / "auto", ridge="auto", progress=False)
    aligned = fit_alignment(SharedBody(load(merged)), _originals(zoo), FIT, "auto", batch_size=7)
    np.testing.assert_allclose(
        aligned.logits(HELD_OUT), load(auto_dir.path).logits(HELD_OUT), rtol=1e-4, atol=1e-4
    )
