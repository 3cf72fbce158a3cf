"""The batcher on a real engine (tiny merged model), driven on an event loop without HTTP:
requests that arrive together share a forward batch, the token budget splits batches, modes do
not mix, a client that went away is skipped, and one failing request fails alone.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import hm3
from hm3.merging.config import MergeConfig
from hm3.model.windows import Windows
from hm3.options import RunOptions
from hm3.serve.batcher import Batcher, Overloaded
from hm3.serve.engine import Cost, Mode, load_engine
from tiny import toy_texts

TEXTS = toy_texts(8, seed=2)


@pytest.fixture(scope="module")
def engine(zoo_of, tmp_path_factory, one_thread):
    zoo = zoo_of("bert")
    models = [{"model": str(m)} for m in zoo.models]
    config = MergeConfig(base_model=str(zoo.base), merge_method="ties", models=models)
    path = hm3.merge(config, tmp_path_factory.mktemp("batcher") / "m", progress=False).path
    return load_engine(path, onnx=False, options=RunOptions(), budget=4096, windows=Windows())


def run(engine, jobs, *, budget=4096, wait_ms=50.0, cancel=()):
    """Submit ``jobs`` (texts, mode) at once; their scores (or exceptions) and the batches."""
    batches: list[tuple[int, int]] = []

    async def main():
        batcher = Batcher(
            engine,
            max_batch_tokens=budget,
            max_wait_ms=wait_ms,
            max_concurrent=100,
            on_batch=lambda n, t: batches.append((n, t)),
        )
        await batcher.start()
        try:
            tasks = [
                asyncio.create_task(batcher.submit(texts, engine.cost(texts, mode), mode))
                for texts, mode in jobs
            ]
            await asyncio.sleep(0)  # every job is queued
            for i in cancel:
                tasks[i].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main()), batches


def probs_of(engine, texts):
    return engine.predictor.predict_proba(texts, windows=Windows())


def test_requests_that_arrive_together_share_one_batch(engine):
    jobs = [([t], Mode()) for t in TEXTS[:5]]
    results, batches = run(engine, jobs)
    assert [n for n, _ in batches] == [5]  # one forward batch (after the warm-up, not counted)
    want = probs_of(engine, TEXTS[:5])
    for i, scores in enumerate(results):
        for task in engine.tasks:
            np.testing.assert_allclose(scores.probs[task.name][0], want[task.name][i], atol=1e-6)


def test_the_token_budget_splits_batches(engine):
    jobs = [([t], Mode()) for t in TEXTS]
    longest = max(c.longest for t in TEXTS for c in engine.cost([t], Mode()))
    budget = 3 * longest  # at most three texts of the longest length per batch
    results, batches = run(engine, jobs, budget=budget)
    assert sum(n for n, _ in batches) == len(TEXTS) and len(batches) >= 3
    assert all(tokens <= budget for _, tokens in batches)
    assert all(r.probs for r in results)


def test_modes_do_not_share_a_batch(engine):
    jobs = [([TEXTS[0]], Mode()), ([TEXTS[1]], Mode(raw=True)), ([TEXTS[2]], Mode(raw=True))]
    results, batches = run(engine, jobs)
    assert [n for n, _ in batches] == [1, 2]
    assert results[0].logits is None
    np.testing.assert_allclose(
        results[1].logits[0], engine.predictor.logits([TEXTS[1]])[0], atol=1e-5
    )


def test_a_cancelled_request_is_skipped_and_the_others_answered(engine):
    jobs = [([t], Mode()) for t in TEXTS[:4]]
    results, batches = run(engine, jobs, cancel=(1,))
    assert isinstance(results[1], asyncio.CancelledError)
    assert [n for n, _ in batches] == [3]
    assert all(r.probs for i, r in enumerate(results) if i != 1)


def test_a_failing_request_fails_alone(engine):
    good = [TEXTS[0]]
    bad = ["\ud800 cannot be encoded"]  # the routes refuse it; here it reaches the tokenizer

    async def main():
        batcher = Batcher(engine, max_batch_tokens=4096, max_wait_ms=50, max_concurrent=10)
        await batcher.start()
        try:
            costs = engine.cost(good, Mode())
            return await asyncio.gather(
                batcher.submit(good, costs, Mode()),
                batcher.submit(bad, [Cost(1, 8, 8)], Mode()),
                batcher.submit(good, costs, Mode()),
                return_exceptions=True,
            )
        finally:
            await batcher.stop()

    first, failed, last = asyncio.run(main())
    assert isinstance(failed, Exception)
    for scores in (first, last):
        assert scores.probs["task0"].shape == (1, 2)


def test_admission_is_bounded(engine):
    batcher = Batcher(engine, max_batch_tokens=4096, max_wait_ms=1, max_concurrent=2)
    with batcher.admission(), batcher.admission():
        with pytest.raises(Overloaded), batcher.admission():
            pass
        assert batcher.admitted == 2
    assert batcher.admitted == 0


def test_a_long_request_takes_turns_with_a_short_one(engine):
    """A document of many windows runs one forward pass at a time, in turn with requests that
    arrive meanwhile: a short request queued during its first pass runs before its second
    (before, it waited for every pass of the document), and both score as they do alone."""
    per_pass = min(engine.options.batch_size, engine.budget // engine.max_length)
    n = 1  # a document of two passes: the short request must run between them
    while engine.cost([" ".join(TEXTS * n)], Mode())[0].rows <= per_pass:
        n += 1
    document = " ".join(TEXTS * n)
    short = [TEXTS[0]]
    finished: list[str] = []

    async def main():
        began = asyncio.Event()
        batcher = Batcher(engine, max_batch_tokens=4096, max_wait_ms=1, max_concurrent=10,
                          on_batch=lambda n, t: began.set())  # fmt: skip
        await batcher.start()
        try:
            first = asyncio.create_task(
                batcher.submit([document], engine.cost([document], Mode()), Mode())
            )
            first.add_done_callback(lambda _: finished.append("document"))
            await began.wait()  # the document's batch has started
            second = asyncio.create_task(batcher.submit(short, engine.cost(short, Mode()), Mode()))
            second.add_done_callback(lambda _: finished.append("short"))
            return await asyncio.gather(first, second)
        finally:
            await batcher.stop()

    (rows,) = engine.cost([document], Mode())
    assert per_pass < rows.rows <= 2 * per_pass and rows.longest == engine.max_length
    long_scores, short_scores = asyncio.run(main())
    assert finished == ["short", "document"]
    for scores, texts in ((long_scores, [document]), (short_scores, short)):
        want = probs_of(engine, texts)
        for task in engine.tasks:
            np.testing.assert_allclose(scores.probs[task.name], want[task.name], atol=1e-6)
