"""ASGI middleware in front of every route: metrics, API key, body size.

- Every HTTP request is counted and timed (:class:`~hm3.serve.metrics.Metrics`) with the status
  it got, refusals included.
- With an API key set, every route but the probes and the docs (:data:`OPEN_PATHS`, exact
  paths) needs ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``), compared in constant
  time; otherwise 401. ``POST /`` (TEI's name for ``/predict``) and ``/metrics`` need it too.
- A body over ``max_body_bytes`` is refused with 413: at once when ``Content-Length`` says so,
  else as soon as the streamed bytes pass the limit.

Errors are ``{"error": "..."}`` with one line. What it does not: parse bodies or run the model.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from hm3.serve.metrics import Metrics

OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
)


class BodyTooLarge(Exception):
    """The streamed body passed the limit (already counted in ``hm3_rejected_total``)."""


def too_large(limit: int) -> str:
    """The error of a body over ``limit`` bytes."""
    return (
        f"request body over {limit} bytes (--max-body-bytes); send fewer or shorter texts per "
        "request"
    )


async def send_error(send: Any, status: int, message: str, headers: dict | None = None) -> None:
    """Send ``{"error": message}`` with ``status`` on a raw ASGI channel."""
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The middleware; ``api_key`` ``None`` (or empty) turns the key check off."""

    def __init__(
        self, app: Any, *, metrics: Metrics, api_key: str | None, max_body_bytes: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "sent": False}

        async def send_tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["sent"] = message["status"], True
            await send(message)

        try:
            await self._guarded(scope, receive, send_tracked)
        except BodyTooLarge:
            if not state["sent"]:
                await send_error(send_tracked, 413, too_large(self.max_body_bytes))
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope.get("path", ""), state["status"], seconds)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        protected = self.api_key is not None and scope.get("path") not in OPEN_PATHS
        if protected and not self._authorised(headers):
            self.metrics.rejected.labels(reason="unauthorised").inc()
            await send_error(
                send,
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                {"www-authenticate": "Bearer"},
            )
            return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            self.metrics.rejected.labels(reason="body_too_large").inc()
            await send_error(send, 413, too_large(self.max_body_bytes))
            return
        seen = 0

        async def receive_limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    self.metrics.rejected.labels(reason="body_too_large").inc()
                    raise BodyTooLarge()
            return message

        await self.app(scope, receive_limited, send)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        assert self.api_key is not None
        given = headers.get(b"x-api-key")
        if given is None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(given, self.api_key)
