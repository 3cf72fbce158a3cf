"""``hm3 serve`` when requests end badly: a shutdown whose grace runs out with requests in
flight (503, not a bare 500), a client gone mid-upload (499, not a bad request), and a body of
millions of wrong items (one short 422 at once), a body behind a byte order mark (read). Real
HTTP: uvicorn on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn

from hm3.serve.server import bind, build, uvicorn_config
from hm3.serve.settings import ServeSettings
from serving import metric, running, wait_ready
from test_cli import expect_user_error


def _one_request_admitted(url: str, timeout: float) -> tuple[threading.Thread, list]:
    """A request sent from a thread, once the server has admitted it: the thread, and the list
    its response lands in (empty if it failed, e.g. ran past ``timeout``)."""
    answers: list[httpx.Response] = []
    client = threading.Thread(target=lambda: answers.append(
        httpx.post(url + "/v1/classify", json={"texts": ["hello"]}, timeout=timeout)))  # fmt: skip
    client.start()
    deadline = time.monotonic() + 60
    while metric(httpx.get(url + "/metrics").text, "hm3_admitted") < 1:
        assert time.monotonic() < deadline, "the request was never admitted"
        time.sleep(0.01)
    return client, answers


def test_requests_still_running_when_the_grace_ends_get_503(bert_ties_merged, one_thread):
    """The model thread is held, so a request cannot finish; SIGTERM's path (``should_exit``)
    waits --shutdown-grace, then uvicorn cancels the request: it is answered 503 in JSON."""
    settings = ServeSettings(port=0, shutdown_grace_s=0.3)
    app = build(bert_ties_merged, settings)
    sock = bind("127.0.0.1", 0)
    config = uvicorn_config(app, settings)  # what `hm3 serve --shutdown-grace 0.3` runs
    assert config.timeout_graceful_shutdown == 0.3
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    wait_ready(url, thread)
    state = app
    while not hasattr(state, "state"):
        state = state.app
    release = threading.Event()
    state.state.server.batcher._model.submit(release.wait, 120)  # a pass that will not end
    client, answers = _one_request_admitted(url, timeout=60)
    server.should_exit = True  # what SIGTERM sets
    client.join(timeout=60)
    release.set()
    thread.join(timeout=60)
    sock.close()
    (r,) = answers
    assert r.status_code == 503, r.text
    assert r.json() == {"error": "server shutting down; retry on another instance"}


def test_hm3_serve_gives_uvicorn_its_shutdown_grace(bert_ties_merged):
    """End to end: `hm3 serve --shutdown-grace 0.2`, its model thread held, answers a request
    in flight with the 503 once SIGTERM's grace is over; under the default 10 s grace the
    client's own 8 s timeout would run out first."""
    held = (
        "import signal, time, hm3.serve.batcher as b; "
        "signal.signal(signal.SIGINT, signal.default_int_handler); "
        "b.Batcher._advance = lambda self, run: time.sleep(300); "  # a pass that will not end
        "from hm3.cli.app import main; main()"
    )
    cmd = [sys.executable, "-c", held, "serve", str(bert_ties_merged), "--port", "0",
           "--shutdown-grace", "0.2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stderr.readline())
        assert found, "no address announced"
        url = f"http://127.0.0.1:{found.group(1)}"
        wait_ready(url)
        client, answers = _one_request_admitted(url, timeout=8)
        proc.send_signal(signal.SIGTERM)
        client.join(timeout=60)
        (r,) = answers  # an httpx.ReadTimeout in the thread would leave this empty
        assert r.status_code == 503, r.text
    finally:
        proc.kill()
        proc.wait()


def test_a_client_gone_mid_upload_is_499_not_a_bad_request(bert_ties_merged, one_thread):
    with running(bert_ties_merged) as url:
        port = int(url.rsplit(":", 1)[1])
        before = httpx.get(url + "/metrics").text
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                sock.sendall(head + b'{"texts": ["a')  # 13 of the 1000 bytes it announced
        deadline = time.monotonic() + 60
        route = {"route": "/v1/classify"}
        while True:
            after = httpx.get(url + "/metrics").text
            if (
                metric(after, "hm3_requests_total", **route, status="499")
                - metric(before, "hm3_requests_total", **route, status="499")
                == 3
            ):
                break
            assert time.monotonic() < deadline, "the three uploads were never counted as 499"
            time.sleep(0.02)
        assert metric(after, "hm3_requests_total", **route, status="400") == metric(
            before, "hm3_requests_total", **route, status="400"
        )
        for reason in ("bad_request",):
            assert metric(after, "hm3_rejected_total", reason=reason) == metric(
                before, "hm3_rejected_total", reason=reason
            )


def test_millions_of_wrong_items_get_one_short_422(bert_ties_merged, one_thread):
    """pydantic would list every wrong item (a 100 MB answer, seconds of the event loop): the
    first is named, and a body of many unknown keys names five problems and counts the rest."""
    with running(bert_ties_merged, max_body_bytes=8 * 2**20) as url:
        body = json.dumps({"texts": ["fine", *[1] * 2_000_000]}).encode()
        r = httpx.post(url + "/v1/classify", content=body, timeout=60)
        assert r.status_code == 422
        assert r.json() == {"error": "body: texts[1]: Input should be a valid string (got 1)"}
        many = {"texts": ["a"], **{f"key{i}": 1 for i in range(20)}}
        r = httpx.post(url + "/v1/classify", json=many, timeout=60)
        error = r.json()["error"]
        assert r.status_code == 422 and error.count("unknown key") == 5
        assert error.endswith("; and 15 more problems")


def test_the_tasks_route_documents_what_it_answers(bert_ties_merged, one_thread):
    with running(bert_ties_merged) as url:
        answer = httpx.get(url + "/v1/tasks").json()
        schema = httpx.get(url + "/openapi.json").json()["components"]["schemas"]
    assert set(answer) <= set(schema["TasksResponse"]["properties"])
    assert answer["long_texts"]["mode"] == "windows"


@pytest.mark.parametrize("grace", ["-1", "nan", "4000"])
def test_a_bad_shutdown_grace_is_one_line(bert_ties_merged, tmp_path, capsys, grace):
    expect_user_error(capsys, tmp_path, "serve", bert_ties_merged, "--shutdown-grace", grace,
                      match=f"--shutdown-grace {float(grace):g}: expected 0 to 3600 seconds",
                      names="--shutdown-grace")  # fmt: skip


def test_a_body_behind_a_byte_order_mark_is_read(bert_ties_merged, one_thread):
    """RFC 8259 lets a JSON reader ignore a leading byte order mark; some Windows clients add
    one. Only the body's first character: a mark inside a text stays part of it."""
    with running(bert_ties_merged) as url:
        body = "\ufeff" + json.dumps({"texts": ["hello world"]})
        r = httpx.post(url + "/v1/classify", content=body.encode("utf-8"), timeout=60)
        assert r.status_code == 200, r.text
        plain = httpx.post(url + "/v1/classify", json={"texts": ["hello world"]}, timeout=60)
        assert r.json() == plain.json()
