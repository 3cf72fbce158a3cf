"""Run ``hm3 serve``'s app with uvicorn on a free loopback port in a background thread (tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from hm3.serve.server import bind, build
from hm3.serve.settings import ServeSettings


@contextmanager
def serving_app(model: Path, *, ready: bool = True, **settings) -> Iterator[tuple[str, Any]]:
    """The base URL and the app of a server for ``model`` (ServeSettings keywords), ready
    first unless ``ready=False`` (a server that may never become ready); stopped after."""
    app = build(model, ServeSettings(port=0, **settings))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        if ready:
            wait_ready(url, thread)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def running(model: Path, **settings) -> Iterator[str]:
    """The base URL of a ready server for ``model`` (ServeSettings keywords); stopped after."""
    with serving_app(model, **settings) as (url, _):
        yield url


@contextmanager
def model_thread_held(app: Any) -> Iterator[None]:
    """The server's model thread waits until the block ends (or a 120 s hang guard): a batch
    handed to it waits, no request admitted meanwhile can be answered, and the jobs after it
    queue in the batcher."""
    while not hasattr(app, "state"):  # the FastAPI app inside hm3's middleware
        app = app.app
    release = threading.Event()
    held = app.state.server.batcher._model.submit(release.wait, 120)
    try:
        yield
    finally:
        release.set()
    assert held.result(timeout=60), "the model thread was released by its hang guard"


def wait_ready(url: str, thread: threading.Thread | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if thread is not None and not thread.is_alive():
            raise RuntimeError("the server thread died")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus text page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
