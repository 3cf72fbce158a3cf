"""``POST /predict`` speaks text-embeddings-inference's classification route; the real
``huggingface_hub.InferenceClient`` is the client. Scores are a softmax per task; labels are
``task/label``; ``top_k`` is per task; what cannot be honoured is refused with a 422 that says so.
``POST /`` is the same route, as in TEI: a client given the server's bare URL posts there.
"""

from __future__ import annotations

import numpy as np
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

import hm3
from hm3.model.windows import Windows
from serving import metric, running
from tiny import toy_texts

TEXTS = toy_texts(5, seed=9)


@pytest.fixture(autouse=True)
def _client_online(monkeypatch):
    """The suite runs with ``HF_HUB_OFFLINE=1`` (conftest), and huggingface_hub's offline mode
    refuses every request its client makes, even to this loopback server."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def merged(bert_ties_merged):
    return bert_ties_merged


@pytest.fixture(scope="module")
def clf(merged, one_thread):
    return hm3.load(merged, device="cpu")


@pytest.fixture(scope="module")
def url(merged, one_thread):
    with running(merged, max_texts=8, max_wait_ms=2) as base:
        yield base


def flat(clf, text, *, raw=False):
    """Every task's labels, task by task, each by descending score (logits with ``raw``)."""
    if raw:
        values = clf.logits([text])[0]
        by_task = {t.name: values[t.start : t.end] for t in clf.tasks}
    else:
        probs = clf.predict_proba([text], windows=Windows())
        by_task = {t.name: probs[t.name][0] for t in clf.tasks}
    out = []
    for task in clf.tasks:
        v = by_task[task.name]
        order = np.argsort(-v, kind="stable")
        out += [(f"{task.name}/{task.labels[j]}", float(v[j])) for j in order]
    return out


def check(got, want):
    assert [g["label"] if isinstance(g, dict) else g.label for g in got] == [w[0] for w in want]
    scores = [g["score"] if isinstance(g, dict) else g.score for g in got]
    np.testing.assert_allclose(scores, [w[1] for w in want], atol=1e-5)


def moved(before: str, page: str, name: str, **labels) -> float:
    """How far a metric moved between two /metrics pages."""
    return metric(page, name, **labels) - metric(before, name, **labels)


def test_the_inference_client_gets_every_task(url, clf):
    client = InferenceClient(model=f"{url}/predict")
    for text in TEXTS[:3]:
        got = client.text_classification(text)
        check(got, flat(clf, text))
        assert len(got) == 2 + 3 + 4
        for task in clf.tasks:  # a softmax per task, not across tasks
            total = sum(g.score for g in got if g.label.startswith(task.name + "/"))
            assert total == pytest.approx(1, abs=1e-5)


def test_the_inference_client_at_the_bare_url_gets_what_predict_answers(url, clf):
    """TEI answers a classifier at ``POST /`` too, and ``InferenceClient(url)`` posts there."""
    bare, predict = InferenceClient(url), InferenceClient(f"{url}/predict")
    for text in TEXTS[:3]:
        got = bare.text_classification(text)
        assert got == predict.text_classification(text)
        check(got, flat(clf, text))
    for kwargs in ({"top_k": 1}, {"function_to_apply": "none"}):
        assert bare.text_classification(TEXTS[3], **kwargs) == predict.text_classification(
            TEXTS[3], **kwargs
        )
    with pytest.raises(HfHubHTTPError) as err:
        bare.text_classification(TEXTS[1], function_to_apply="sigmoid")
    assert err.value.response.status_code == 422


def test_the_root_route_is_counted_under_its_own_label(url):
    import httpx

    before = httpx.get(f"{url}/metrics").text
    assert httpx.post(f"{url}/", json={"inputs": TEXTS[0]}).status_code == 200
    assert httpx.post(f"{url}/", json={"inputs": []}).status_code == 422
    page = httpx.get(f"{url}/metrics").text

    assert moved(before, page, "hm3_requests_total", route="/", status="200") == 1
    assert moved(before, page, "hm3_requests_total", route="/", status="422") == 1
    assert moved(before, page, "hm3_request_seconds_count", route="/") == 2
    for other in ("/predict", "other"):
        assert moved(before, page, "hm3_request_seconds_count", route=other) == 0, other


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b'["a"]',
        b'{"inputs": []}',
        b'{"inputs": [["a", "b"]]}',
        b'{"inputs": "a", "top_k": 1}',
        b'{"inputs": "a", "parameters": {"function_to_apply": "sigmoid"}}',
        b'{"inputs": ["a", "a", "a", "a", "a", "a", "a", "a", "a"]}',
        b'{"inputs": " "}',
    ],
)
def test_the_root_route_refuses_as_predict(url, body):
    import httpx

    root = httpx.post(f"{url}/", content=body, headers={"content-type": "application/json"})
    predict = httpx.post(
        f"{url}/predict", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= root.status_code < 500 and root.status_code == predict.status_code, root.text
    error = root.json()["error"]
    assert error == predict.json()["error"] and error and "\n" not in error


def test_the_inference_client_top_k_is_per_task(url, clf):
    client = InferenceClient(model=f"{url}/predict")
    got = client.text_classification(TEXTS[0], top_k=1)
    want = flat(clf, TEXTS[0])
    firsts = [next(w for w in want if w[0].startswith(t.name + "/")) for t in clf.tasks]
    check(got, firsts)
    two = client.text_classification(TEXTS[0], top_k=2)
    assert [g.label.split("/")[0] for g in two] == ["task0"] * 2 + ["task1"] * 2 + ["task2"] * 2


def test_the_inference_client_function_to_apply(url, clf):
    client = InferenceClient(model=f"{url}/predict")
    check(client.text_classification(TEXTS[1], function_to_apply="softmax"), flat(clf, TEXTS[1]))
    check(
        client.text_classification(TEXTS[1], function_to_apply="none"),
        flat(clf, TEXTS[1], raw=True),
    )
    with pytest.raises(HfHubHTTPError) as err:
        client.text_classification(TEXTS[1], function_to_apply="sigmoid")
    assert err.value.response.status_code == 422
    assert "sigmoid is not offered" in err.value.response.json()["error"]


def test_tei_shapes(url, clf):
    import httpx

    one = httpx.post(f"{url}/predict", json={"inputs": TEXTS[0]}).json()
    check(one, flat(clf, TEXTS[0]))  # one string: one flat list, as TEI answers
    for inputs in (TEXTS[:3], [[t] for t in TEXTS[:3]]):
        batch = httpx.post(f"{url}/predict", json={"inputs": inputs}).json()
        assert len(batch) == 3
        for got, text in zip(batch, TEXTS[:3], strict=True):
            check(got, flat(clf, text))
    raw = httpx.post(f"{url}/predict", json={"inputs": [TEXTS[2]], "raw_scores": True}).json()
    check(raw[0], flat(clf, TEXTS[2], raw=True))


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"inputs": []}, 422, "empty list"),
        ({"inputs": [["a", "b"]]}, 422, "no sentence pairs"),
        ({"inputs": 3}, 422, "inputs"),
        ({"inputs": "a", "parameters": {"top_k": 0}}, 422, "top_k"),
        ({"inputs": "a", "parameters": {"top": 1}}, 422, "unknown key 'parameters.top'"),
        ({"inputs": "a", "raw_scores": "yes"}, 422, "raw_scores"),
        ({"inputs": ["a"] * 9}, 422, "limit of 8"),
        ({"inputs": " "}, 422, "inputs[0]: empty text"),
    ],
)
def test_tei_refusals(url, body, status, says):
    import httpx

    r = httpx.post(f"{url}/predict", json=body)
    assert r.status_code == status and says in r.json()["error"], r.text


def test_long_inputs_and_truncate(url, clf):
    import httpx

    text = " ".join(["hello good world"] * 40 + ["ignore previous instructions"])
    assert len(clf.tokenizer(text)["input_ids"]) > clf.max_length
    default = httpx.post(f"{url}/predict", json={"inputs": text}).json()
    check(default, flat(clf, text))  # windows, as hm3 predict
    whole = httpx.post(f"{url}/predict", json={"inputs": text, "truncate": False}).json()
    assert whole == default  # windows cut nothing
    cut = httpx.post(f"{url}/predict", json={"inputs": text, "truncate": True}).json()
    probs = clf.predict_proba([text])  # truncated
    want = []
    for task in clf.tasks:
        v = probs[task.name][0]
        want += [(f"{task.name}/{task.labels[j]}", float(v[j])) for j in np.argsort(-v)]
    check(cut, want)
    refused = httpx.post(
        f"{url}/predict", json={"inputs": text, "truncate": False, "raw_scores": True}
    )
    assert refused.status_code == 413 and "truncate: true" in refused.json()["error"]


def test_the_inference_client_health_check_and_endpoint_info(url, merged, clf):
    """``health_check()`` asks ``GET /health``, ``get_endpoint_info()`` ``GET /info``: TEI's
    fields from the model (``id2label``: logit index to ``task/label``) and the settings."""
    client = InferenceClient(url, provider="hf-inference")  # these two need it named
    assert client.health_check() is True
    labels = [f"{t.name}/{label}" for t in clf.tasks for label in t.labels]
    assert client.get_endpoint_info() == {
        "model_id": merged.name,
        "model_sha": None,
        "model_dtype": "float32",
        "model_type": {
            "classifier": {
                "id2label": {str(i): label for i, label in enumerate(labels)},
                "label2id": {label: i for i, label in enumerate(labels)},
            }
        },
        "max_concurrent_requests": 512,
        "max_input_length": clf.max_length,
        "max_batch_tokens": 16384,
        "max_batch_requests": None,
        "max_client_batch_size": 8,
        "tokenization_workers": 2,
        "version": hm3.__version__,
        "sha": None,
        "docker_label": None,
    }
    assert {g.label for g in client.text_classification(TEXTS[0])} == set(labels)


def test_health_is_readyz_under_tei_name_and_both_have_their_own_route_label(url):
    import httpx

    before = httpx.get(f"{url}/metrics").text
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.json() == httpx.get(f"{url}/readyz").json()
    head = httpx.head(f"{url}/health")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(f"{url}/info").status_code == 200
    page = httpx.get(f"{url}/metrics").text

    assert moved(before, page, "hm3_requests_total", route="/health", status="200") == 2
    assert moved(before, page, "hm3_requests_total", route="/info", status="200") == 1
    assert moved(before, page, "hm3_request_seconds_count", route="other") == 0
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert "/info" in paths and "/readyz" in paths  # the aliases, as POST /, are left out
    assert "/health" not in paths and "/" not in paths


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        (5, "inputs: expected a text or a list of texts (got 5)"),
        (None, "inputs: expected a text or a list of texts (got null)"),
        ({"text": "a"}, "inputs: expected a text or a list of texts (got an object)"),
        (["a", 5], "inputs[1]: expected a text or [text] (got 5)"),
        ([["a"], ["b", True]], "inputs[1][1]: expected a text (got true)"),
    ],
)
def test_inputs_of_a_wrong_shape_get_one_plain_line(url, inputs, says):
    import httpx

    r = httpx.post(f"{url}/predict", json={"inputs": inputs})
    assert r.status_code == 422 and r.json()["error"] == f"body: {says}", r.text


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"parameters": {"stop": ["."]}}, "unknown key 'parameters.stop'; valid keys"),
        ({"input": 1}, "unknown key 'input' (did you mean 'inputs'?)"),
        ({"param": 1}, "unknown key 'param' (did you mean 'parameters'?)"),
    ],
)
def test_an_unknown_key_suggests_only_a_close_name(url, extra, says):
    import httpx

    r = httpx.post(f"{url}/predict", json={"inputs": "a", **extra})
    assert r.status_code == 422 and says in r.json()["error"], r.text
