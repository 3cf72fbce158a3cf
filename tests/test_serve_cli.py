"""``hm3 serve`` as a command: it serves until interrupted, and refuses what it cannot serve with
one line and exit status 2 before opening a port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest
import yaml

from serving import wait_ready
from tiny import HM3_COMMAND

HM3 = HM3_COMMAND


@pytest.fixture(scope="module")
def merged(bert_ties_merged):
    return bert_ties_merged


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 0), (signal.SIGTERM, -signal.SIGTERM)])
def test_hm3_serve_serves_until_interrupted(merged, sig, status):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*HM3, "serve", str(merged), "--port", "0", "--max-wait-ms", "1"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found and "(no API key; " in line, line
        url = f"http://127.0.0.1:{found.group(1)}"
        wait_ready(url)
        r = httpx.post(f"{url}/v1/classify", json={"texts": ["hello world"]}, timeout=30)
        assert r.status_code == 200 and set(r.json()["results"][0]["tasks"]) == {
            "task0",
            "task1",
            "task2",
        }
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == status  # a graceful stop; SIGTERM then ends by it
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _idle_then_reuse(url: str, idle_s: float) -> bool:
    """One request on a keep-alive connection, ``idle_s`` of silence, then a second request on
    the same connection: whether the server still answered it there (False: it had closed)."""
    import http.client
    import time

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        assert first.status == 200 and first.read()  # the whole answer: the socket is idle
        sock = conn.sock
        time.sleep(idle_s)
        try:
            conn.request("GET", "/healthz")
            second = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return False
        return second.status == 200 and conn.sock is sock  # not reconnected behind our back
    finally:
        conn.close()


@pytest.mark.parametrize(("flags", "kept"), [([], True), (["--keep-alive", "1"], False)])
def test_idle_connections_stay_open_for_keep_alive(merged, flags, kept):
    """Uvicorn's own default closes an idle connection after 5 s, which races with pooled
    clients reusing it (a reset, seen in benchmarks/serve_load.py's chain); hm3 keeps it 75 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*HM3, "serve", str(merged), "--port", "0", *flags],
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stderr.readline())
        assert found
        url = f"http://127.0.0.1:{found.group(1)}"
        wait_ready(url)
        assert _idle_then_reuse(url, 6.0 if kept else 2.5) is kept
    finally:
        proc.kill()
        proc.wait()


def one_line_exit_2(args, tmp_path, env=None) -> str:
    done = subprocess.run([*HM3, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


def test_bad_policy_unknown_task_exits_2(merged, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"task": "toxicity", "label": "toxic"}]}))
    line = one_line_exit_2(["serve", str(merged), "--policy", str(policy), "--port", "0"], tmp_path)
    assert "'toxicity' is not a task of the model" in line and "task0, task1, task2" in line


def test_a_taken_port_and_bad_limits_exit_2(merged, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = one_line_exit_2(["serve", str(merged), "--port", port], tmp_path)
    assert "cannot listen there" in line
    line = one_line_exit_2(["serve", str(merged), "--max-batch-tokens", "100"], tmp_path)
    assert "--max-batch-tokens 100" in line
    line = one_line_exit_2(["serve", str(merged), "--keep-alive", "0"], tmp_path)
    assert "--keep-alive 0" in line
    line = one_line_exit_2(["serve", str(tmp_path / "nope")], tmp_path)
    assert "nope" in line


def test_help_does_not_import_the_server():
    code = (
        "import sys; from hm3.cli import app; "
        "assert not {'fastapi', 'uvicorn', 'prometheus_client'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_named_key_variable_must_hold_a_key(merged, tmp_path):
    """Naming --api-key-env and forgetting to export it, or a secret mounted empty, must not
    serve without a key: exit 2 before the model loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("HM3_API_KEY", "MY_KEY")}
    line = one_line_exit_2(["serve", str(merged), "--api-key-env", "MY_KEY"], tmp_path, env)
    assert "--api-key-env MY_KEY: $MY_KEY is not set" in line
    line = one_line_exit_2(["serve", str(merged)], tmp_path, {**env, "HM3_API_KEY": ""})
    assert "$HM3_API_KEY is set but empty" in line
    line = one_line_exit_2(["serve", str(merged), "--api-key-env", "MY_KEY"], tmp_path,
                           {**env, "MY_KEY": ""})  # fmt: skip
    assert "$MY_KEY is set but empty" in line


def test_a_mistyped_host_fails_before_the_model_loads(tmp_path):
    line = one_line_exit_2(["serve", str(tmp_path / "nope"), "--host", "999.1.1.1"], tmp_path)
    assert "--host 999.1.1.1" in line and "cannot listen there" in line
