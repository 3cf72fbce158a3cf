"""``hm3 serve`` against what broke it once: a bad ``--default-label``, huge JSON integers,
cost counting racing the model thread for the tokenizer, clients that go away, a streamed body
over the limit, TEI's ``truncation_direction``, huge echoed values, non-finite scores and
``HEAD`` probes. Real HTTP (uvicorn on loopback, tests/serving.py) and the tiny merged model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hm3.errors import Hm3Error
from hm3.model.windows import Windows
from hm3.options import RunOptions
from hm3.serve.batcher import Batcher
from hm3.serve.engine import Mode, load_engine
from hm3.serve.server import build
from hm3.serve.settings import ServeSettings
from serving import metric, model_thread_held, running, serving_app
from tiny import HM3_COMMAND

HM3 = HM3_COMMAND
LONG = " ".join(["the good world"] * 300)  # about 900 tokens: windows of the 64-token model


@pytest.fixture(scope="module")
def merged(bert_ties_merged):
    return bert_ties_merged


@pytest.fixture(scope="module")
def url(merged, one_thread):
    with running(merged, max_body_bytes=5000, max_wait_ms=1) as base:
        yield base


@pytest.fixture(scope="module")
def engine(merged, one_thread):
    return load_engine(
        merged,
        onnx=False,
        options=RunOptions(batch_size=64).resolved(),
        budget=16384,
        windows=Windows(),
    )


def one_line(r: httpx.Response) -> str:
    message = r.json()["error"]
    assert "\n" not in message
    return message


def test_a_bad_default_label_is_a_one_line_startup_error(merged, tmp_path):
    done = subprocess.run(
        [*HM3, "serve", str(merged), "--port", "0", "--default-label", "task0=nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert "task 'task0' has no label 'nope'" in lines[0] and "serving" not in done.stderr
    windows = Windows(default_labels={"nope": "x"})
    with pytest.raises(Hm3Error, match="the model has no task 'nope'"):
        build(merged, ServeSettings(port=0, windows=windows))


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/predict", '{"inputs": "hi", "parameters": {"top_k": %s}}' % ("9" * 4400)),
        ("/v1/classify", '{"texts": [%s]}' % ("1" * 4400)),
    ],
)
def test_a_json_integer_over_4300_digits_is_a_400(url, route, body):
    r = httpx.post(url + route, content=body, timeout=30)
    assert r.status_code == 400, r.text
    assert one_line(r).startswith("body is not valid JSON (an integer with too many digits)")


def test_cost_and_the_model_thread_do_not_share_tokenizer_state(engine):
    """The model thread tokenizes with truncation and windows while two others count costs.

    No thread stops before every thread has done its share (3 inferences, 20 costs each), so
    the counting overlaps the model's tokenizing whatever the machine's speed.
    """
    texts = [LONG, " ".join(["hello world"] * 400), "short"]
    want_costs = engine.cost(texts, Mode())
    assert want_costs[0].tokens > engine.max_length
    want = engine.infer(texts, Mode(), engine.max_length)
    errors: list[str] = []
    counts = {"infer": 0, "cost a": 0, "cost b": 0}  # each written by its own thread only
    hang_guard = time.monotonic() + 120

    def going() -> bool:
        shares = counts["infer"] >= 3 and min(counts["cost a"], counts["cost b"]) >= 20
        return not shares and time.monotonic() < hang_guard

    def model() -> None:
        while going():
            try:
                got = engine.infer(texts, Mode(), engine.max_length)
                for name, probs in want.probs.items():
                    np.testing.assert_allclose(got.probs[name], probs, atol=1e-5)
            except Exception as exc:  # an untruncated row reaches the model, or wrong scores
                errors.append(f"infer: {type(exc).__name__}: {str(exc)[:100]}")
            counts["infer"] += 1

    def coster(name: str) -> None:
        while going():
            try:
                if engine.cost(texts[:2], Mode()) != want_costs[:2]:
                    errors.append("cost: counted a truncated text")
            except Exception as exc:
                errors.append(f"cost: {type(exc).__name__}: {str(exc)[:100]}")
            counts[name] += 1

    threads = [threading.Thread(target=model)]
    threads += [threading.Thread(target=coster, args=(name,)) for name in ("cost a", "cost b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} failures, e.g. {errors[:3]}"
    assert time.monotonic() < hang_guard, f"the threads did not do their share in 120 s: {counts}"


async def until(done, what: str, seconds: float = 60) -> None:
    """Yield to the event loop until ``done()``; a hang guard, not a time limit on the feature."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"hung: {what} (not within {seconds} s)"
        await asyncio.sleep(0.001)


def test_a_job_cancelled_while_its_batch_is_collected_never_runs(engine):
    """The collector holds a job, waiting (a minute) for others to join; its client goes away.
    The next job is too big to join it (the budget is its own size), which closes the held
    batch: it must run nothing, and the next job runs alone."""
    batches: list[int] = []
    costs = {t: engine.cost([t], Mode()) for t in "abcd"}
    assert len({c[0].longest for c in costs.values()}) == 1  # one token each: equal costs
    budget = 2 * costs["a"][0].longest  # room for 2 texts: ("a") + ("b", "c") do not fit

    async def main():
        batcher = Batcher(
            engine,
            max_batch_tokens=budget,
            max_wait_ms=60_000,
            max_concurrent=10,
            on_batch=lambda n, _t: batches.append(n),
        )
        await batcher.start()
        submit = lambda *ts: asyncio.create_task(  # noqa: E731
            batcher.submit(list(ts), [costs[t][0] for t in ts], Mode())
        )
        try:
            gone = submit("a")
            await asyncio.sleep(0)  # the task's first step runs (callbacks run in order)
            assert len(batcher._queue) == 1  # "a" is queued; the collector has not woken yet
            await until(lambda: not batcher._queue, "the collector takes the job")
            assert not gone.done() and batches == []  # held in the batch being collected
            gone.cancel()
            kept = submit("b", "c")  # over the budget with "a": closes a's batch
            closer = submit("d")  # over the budget with ("b", "c"): closes theirs
            scores = await asyncio.wait_for(kept, 60)
            closer.cancel()  # its batch waits a minute for others: not this test's business
            return gone.cancelled(), scores
        finally:
            await batcher.stop()

    cancelled, scores = asyncio.run(main())
    assert cancelled
    # "a" never ran, not even with b; "d" may have started once (b, c) was running
    assert batches in ([2], [2, 1]) and len(scores.probs["task0"]) == 2


def test_the_queue_depth_leaves_out_jobs_whose_client_went_away(engine):
    """While the model thread is held, the first job's batch waits on it and three more queue;
    one of them is cancelled; the depth counts the live ones, and those run together."""
    batches: list[int] = []

    async def main():
        batcher = Batcher(
            engine,
            max_batch_tokens=16384,
            max_wait_ms=5,
            max_concurrent=10,
            on_batch=lambda n, _t: batches.append(n),
        )
        await batcher.start()
        release = threading.Event()
        held = batcher._model.submit(release.wait, 60)  # the model thread waits for the test
        submit = lambda t: asyncio.create_task(  # noqa: E731
            batcher.submit([t], engine.cost([t], Mode()), Mode())
        )
        try:
            first = submit("a")
            await until(lambda: batches == [1], "the first batch goes to the model thread")
            waiting = [submit(t) for t in ("b", "c", "d")]
            await until(lambda: len(batcher._queue) == 3, "three jobs queue")
            depths = [batcher.queued]
            waiting[1].cancel()
            await asyncio.sleep(0)
            depths.append(batcher.queued)
            release.set()
            answered = await asyncio.wait_for(asyncio.gather(first, waiting[0], waiting[2]), 60)
            assert held.result(), "the model thread was released by its 60 s hang guard"
            return depths, answered, batcher.queued
        finally:
            release.set()
            await batcher.stop()

    depths, answered, after = asyncio.run(main())
    assert depths == [3, 2] and after == 0
    assert batches == [1, 2]  # "b" and "d" queued together and ran together; "c" never ran
    assert all(len(s.probs["task0"]) == 1 for s in answered)


def test_a_client_that_goes_away_frees_its_place_at_once(merged, one_thread):
    """Two requests take both places while the model thread is held: the first one's batch
    waits on it, the second queues behind. Their clients leave; both places free while the
    model thread is still held, so not when their jobs would end. Released, the first batch
    runs (its answer dropped); the queued job never runs."""
    body = json.dumps({"texts": ["hello world good"]}).encode()
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with serving_app(merged, max_concurrent=2) as (url, app):
        before = httpx.get(url + "/metrics").text
        port = int(url.rsplit(":", 1)[1])

        def state(page: str) -> tuple[float, float, float]:
            texts = metric(page, "hm3_batch_texts_sum") - metric(before, "hm3_batch_texts_sum")
            return texts, metric(page, "hm3_queue_depth"), metric(page, "hm3_admitted")

        clients = []
        with model_thread_held(app):
            for want in ((1, 0, 1), (1, 1, 2)):  # the first batch goes, the second job queues
                clients.append(socket.create_connection(("127.0.0.1", port)))
                clients[-1].sendall(head + body)
                wait_for(url, lambda page, want=want: state(page) == want, f"state {want}")
            for sock in clients:
                sock.close()  # without reading the answers
            wait_for(
                url,
                lambda page: state(page) == (1, 0, 0),
                "both places free (and the queued job dropped) while the model is held",
            )
            page = httpx.get(url + "/metrics").text
            assert metric(page, "hm3_requests_total", route="/v1/classify", status="499") == 2
        r = httpx.post(url + "/v1/classify", json={"texts": ["still here"]}, timeout=60)
        assert r.status_code == 200
        page = httpx.get(url + "/metrics").text
        batches = metric(page, "hm3_batch_texts_count") - metric(before, "hm3_batch_texts_count")
        assert batches == 2  # the first job's (handed over before its client left), the short one


def wait_for(url: str, ok, what: str, seconds: float = 60) -> None:
    """Poll /metrics until ``ok(page)``; a hang guard, not a time limit on the feature."""
    deadline = time.monotonic() + seconds
    while not ok(httpx.get(url + "/metrics").text):
        assert time.monotonic() < deadline, f"hung: {what} (not within {seconds} s)"
        time.sleep(0.01)


def test_a_streamed_body_over_the_limit_is_counted_once(url):
    before = httpx.get(url + "/metrics").text
    chunks = (b'{"texts": ["' + b"x" * 1000 for _ in range(10))  # no content-length
    r = httpx.post(url + "/v1/classify", content=chunks, timeout=30)
    assert r.status_code == 413 and "--max-body-bytes" in one_line(r)
    after = httpx.get(url + "/metrics").text
    for reason, moved in (("body_too_large", 1), ("bad_request", 0)):
        change = metric(after, "hm3_rejected_total", reason=reason) - metric(
            before, "hm3_rejected_total", reason=reason
        )
        assert change == moved, reason


@pytest.mark.parametrize("streamed", [False, True])
def test_the_root_route_has_predicts_body_limit(url, streamed):
    """``POST /`` is TEI's ``/predict`` under another name: over ``--max-body-bytes`` it gets
    the same 413, whether ``Content-Length`` says so or the streamed bytes pass the limit."""
    body = b'{"inputs": "' + b"x" * 6000 + b'"}'
    answers = {}
    for route in ("/", "/predict"):
        content = iter([body[:3000], body[3000:]]) if streamed else body
        answers[route] = httpx.post(url + route, content=content, timeout=30)
    root, predict = answers["/"], answers["/predict"]
    assert root.status_code == predict.status_code == 413
    assert one_line(root) == one_line(predict) and "--max-body-bytes" in one_line(root)


def test_tei_truncation_direction(url):
    def predict(**body):
        return httpx.post(url + "/predict", json={"inputs": LONG, **body}, timeout=60)

    windows = predict().json()
    cut = predict(truncate=True).json()
    assert windows != cut
    for direction in ("right", "Right", "left", "Left"):  # windows cut nothing
        assert predict(truncation_direction=direction).json() == windows
    assert predict(truncation_direction="right", truncate=True).json() == cut
    short = httpx.post(
        url + "/predict",
        timeout=60,
        json={"inputs": "hi", "truncation_direction": "left", "truncate": True},
    )
    assert short.status_code == 200
    for body in ({"truncate": True}, {"raw_scores": True}):
        r = predict(truncation_direction="left", **body)
        assert r.status_code == 422, r.text
        assert one_line(r).startswith("truncation_direction: left is not offered, and inputs[0]")
    r = predict(truncation_direction="up")
    assert r.status_code == 422 and "truncation_direction" in one_line(r)


def test_a_huge_value_is_not_echoed_whole(merged, one_thread):
    with running(merged) as base:
        r = httpx.post(base + "/v1/classify", json={"texts": "x" * 1_000_000}, timeout=60)
    assert r.status_code == 422 and len(r.content) < 300
    assert one_line(r).startswith("body: texts: Input should be a valid list (got 'xxx")


def test_probes_answer_head(url):
    for path in ("/healthz", "/readyz"):
        r = httpx.head(url + path)
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-length"] == str(len(httpx.get(url + path).content))


@pytest.fixture(scope="module")
def overflowing(merged, tmp_path_factory):
    """The merged model with a bias that overflows float16 (70000 > 65504) for every text."""
    path = tmp_path_factory.mktemp("overflow") / "model"
    shutil.copytree(merged, path)
    weights = load_file(path / "model.safetensors")
    weights["classifier.bias"][0] = 7e4
    save_file(weights, path / "model.safetensors")
    return path


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_scores_are_never_answered(overflowing, caplog, one_thread):
    """Every text overflows float16: the warm-up fails (not ready, and why), and requests get
    500, never scores. Two requests queued behind a held model thread share one batch, which
    fails, then runs them one by one."""
    options = RunOptions(batch_size=64, dtype="float16")
    with (
        caplog.at_level(logging.WARNING, logger="hm3"),
        serving_app(overflowing, ready=False, options=options) as (url, app),
    ):
        deadline = time.monotonic() + 60
        while (r := _get(url + "/readyz")) is None or "warming up" in r.text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.status_code == 503
        assert "non-finite scores" in one_line(r) and "--dtype float32" in one_line(r)
        health = httpx.get(url + "/health")  # TEI's name for /readyz: not ready, so 503
        assert health.status_code == 503 and one_line(health) == one_line(r)
        answers: list[httpx.Response] = []

        def classify() -> None:
            answers.append(httpx.post(url + "/v1/classify", json={"texts": ["hi"]}, timeout=60))

        clients = [threading.Thread(target=classify) for _ in "abc"]
        with model_thread_held(app):
            clients[0].start()  # its batch waits on the held model thread
            wait_for(url, lambda page: metric(page, "hm3_batch_texts_count") == 1, "a batch")
            for t in clients[1:]:  # both queue behind it: one batch once it is released
                t.start()
            wait_for(url, lambda page: metric(page, "hm3_queue_depth") == 2, "two queued")
        for t in clients:
            t.join()
    assert [a.status_code for a in answers] == [500, 500, 500]
    assert all("non-finite scores" in one_line(a) for a in answers)
    said = [rec.getMessage() for rec in caplog.records]
    assert any(m.startswith("warm-up failed: NonFiniteScores: the model gave") for m in said)
    assert any("a batch of 2 requests failed (NonFiniteScores: " in m for m in said), said


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None
