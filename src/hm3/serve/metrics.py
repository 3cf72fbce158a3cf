"""Prometheus metrics of one server (each server its own registry, so tests can run several).

- ``hm3_requests_total{route, status}``: answered requests; ``route`` is the path as asked
  (``/`` and ``/predict`` are counted apart, though one is TEI's name for the other, and so are
  ``/health`` and ``/readyz``), ``other`` for a path that is not a route.
- ``hm3_request_seconds{route}``: latency histogram, from the first byte read to the answer.
- ``hm3_batch_texts`` / ``hm3_batch_tokens``: texts and padded tokens per forward batch.
- ``hm3_queue_depth``: jobs waiting for the model; ``hm3_admitted``: requests admitted now.
- ``hm3_rejected_total{reason}``: requests refused before the model (``overloaded`` ...).

What it does not: serve ``/metrics`` (the app does) or time anything itself.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# the routes a label may name; anything else is "other", so a scan cannot blow up the series
ROUTES = (
    "/v1/classify",
    "/predict",
    "/",
    "/info",
    "/v1/tasks",
    "/healthz",
    "/readyz",
    "/health",
    "/metrics",
)
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TEXTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """The server's collectors and its ``/metrics`` text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], int], admitted: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "hm3_requests",
            "Requests answered, by route and status.",
            ["route", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "hm3_request_seconds",
            "Request latency in seconds, by route.",
            ["route"],
            buckets=_LATENCY,
            registry=reg,
        )
        self.batch_texts = Histogram(
            "hm3_batch_texts", "Texts per forward batch.", buckets=_TEXTS, registry=reg
        )
        self.batch_tokens = Histogram(
            "hm3_batch_tokens",
            "Padded tokens (texts x longest) per forward batch.",
            buckets=_TOKENS,
            registry=reg,
        )
        self.rejected = Counter(
            "hm3_rejected",
            "Requests refused before the model, by reason.",
            ["reason"],
            registry=reg,
        )
        Gauge("hm3_queue_depth", "Requests waiting for a forward pass.", registry=reg).set_function(
            queue_depth
        )
        Gauge("hm3_admitted", "Requests admitted and not yet answered.", registry=reg).set_function(
            admitted
        )

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, texts: int, tokens: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
