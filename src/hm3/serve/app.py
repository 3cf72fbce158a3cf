"""The ASGI application of ``hm3 serve``: the routes, their state, error answers, OpenAPI.

:func:`create_app` builds the batcher and the metrics around a loaded engine, mounts
:mod:`hm3.serve.routes`, answers every refusal as ``{"error": "<one line>"}`` with its status
(400, 401, 404, 405, 413, 422, 429, 503; 499 to a client that went away, logged nowhere; 500
for non-finite scores or a bug, logged), and wraps everything in
:class:`~hm3.serve.guard.Guard` (API key, body size, request metrics). A refused or failed
request changes nothing for the others. The request bodies, which the routes read themselves,
are added to FastAPI's OpenAPI document. What it does not: load the model or listen on a port
(:mod:`hm3.serve.server`).
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hm3.io.paths import dir_name
from hm3.serve import tei
from hm3.serve.batcher import Batcher, Overloaded, ShuttingDown
from hm3.serve.engine import Engine, NonFiniteScores
from hm3.serve.guard import Guard
from hm3.serve.metrics import Metrics
from hm3.serve.policy import Policy
from hm3.serve.routes import TOKENIZE_WORKERS, ClientGone, Server, router
from hm3.serve.schemas import BadRequest, ClassifyRequest
from hm3.serve.settings import ServeSettings
from hm3.version import __version__

log = logging.getLogger("hm3")


def create_app(
    engine: Engine, settings: ServeSettings, policy: Policy | None, api_key: str | None
) -> Any:
    """The ASGI application for ``engine`` under ``settings`` (``api_key`` None: no key)."""
    batcher = Batcher(
        engine,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_ms=settings.max_wait_ms,
        max_concurrent=settings.max_concurrent,
    )
    metrics = Metrics(lambda: batcher.queued, lambda: batcher.admitted)
    batcher.on_batch = metrics.observe_batch
    pool = ThreadPoolExecutor(max_workers=TOKENIZE_WORKERS, thread_name_prefix="hm3-tokens")
    server = Server(engine, batcher, policy, settings, metrics, pool)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="hm3 guard server",
        version=__version__,
        description=f"Every task of {dir_name(engine.path)} in one forward pass.",
        lifespan=lifespan,
    )
    app.state.server = server
    app.include_router(router)
    _answer_errors(app, server)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return Guard(app, metrics=metrics, api_key=api_key, max_body_bytes=settings.max_body_bytes)


def _answer_errors(app: FastAPI, server: Server) -> None:
    """Every refusal as ``{"error": one line}``."""

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        if exc.reason is not None:
            server.metrics.rejected.labels(reason=exc.reason).inc()
        return error(exc.status, exc.message)

    @app.exception_handler(ClientGone)
    async def client_gone(_request: Request, _exc: ClientGone) -> JSONResponse:
        return error(499, "client closed the request before its answer")  # nginx's 499

    @app.exception_handler(NonFiniteScores)
    async def non_finite(_request: Request, exc: NonFiniteScores) -> JSONResponse:
        log.error("request failed: %s", exc)
        return error(500, str(exc))

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, _exc: Overloaded) -> JSONResponse:
        server.metrics.rejected.labels(reason="overloaded").inc()
        limit = server.batcher.max_concurrent
        return error(
            429,
            f"server busy: {limit} requests in progress (--max-concurrent); retry shortly",
            {"retry-after": "1"},
        )

    @app.exception_handler(ShuttingDown)
    async def stopping(_request: Request, _exc: ShuttingDown) -> JSONResponse:
        return error(503, "server shutting down; retry on another instance")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        message = {
            404: f"no route {where}; the routes are listed at /docs",
            405: f"{where}: method not allowed; the routes and their methods are at /docs",
        }.get(exc.status_code, f"{where}: {exc.detail}")
        return error(exc.status_code, message, exc.headers)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document plus the request bodies, which the routes read themselves."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in (ClassifyRequest, tei.TeiRequest):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        app.openapi_schema = doc
    return app.openapi_schema
