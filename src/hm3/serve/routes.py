"""The routes of ``hm3 serve`` (an ``APIRouter``); their shared state is a :class:`Server`.

``POST /v1/classify`` (the ``hm3 predict --json`` schema, plus ``flagged``/``reasons`` with a
policy), ``POST /predict`` (TEI's classification route, :mod:`hm3.serve.tei`; ``POST /``
is the same route, as TEI serves a classifier at its root too, and is left out of OpenAPI),
``GET /info`` (TEI's: the model, its labels and the limits), ``GET /v1/tasks``, ``GET /healthz``
(the process answers), ``GET /readyz`` (the model is loaded and warmed up; also TEI's ``GET
/health``, left out of OpenAPI; the probes answer ``HEAD`` too), ``GET /metrics`` (Prometheus).
Bodies are read and checked here (:mod:`hm3.serve.schemas`); a refusal raises
:class:`~hm3.serve.schemas.BadRequest`, which the app answers. A client that disconnects while
its texts wait or run frees its ``--max-concurrent`` place at once: its job is cancelled (the
batcher skips it) and the request ends with :class:`ClientGone`. What it does not: build the
app, answer errors, or run the model itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from hm3.serve import tei
from hm3.serve.batcher import Batcher, ShuttingDown
from hm3.serve.engine import Cost, Engine, Mode, Scores
from hm3.serve.guard import BodyTooLarge, too_large
from hm3.serve.metrics import Metrics
from hm3.serve.policy import Policy
from hm3.serve.schemas import (
    BadRequest,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    TasksResponse,
    check_texts,
    parse_body,
    task_prediction,
)
from hm3.serve.settings import ServeSettings

INLINE_TOKENIZE_CHARS = 4096  # shorter requests are tokenized on the event loop (cheaper)
TOKENIZE_WORKERS = 2  # threads that tokenize the longer ones
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503)
}
router = APIRouter()
T = TypeVar("T")
CostCheck = Callable[[list[Cost]], None]


class ClientGone(Exception):
    """The client disconnected before its answer was ready (its job is cancelled)."""


@dataclass
class Server:
    """What the routes share: the model, its batcher, the policy, the limits, the metrics."""

    engine: Engine
    batcher: Batcher
    policy: Policy | None
    settings: ServeSettings
    metrics: Metrics
    tokens_pool: ThreadPoolExecutor

    async def score(
        self, request: Request, texts: list[str], mode: Mode, vet: CostCheck | None = None
    ) -> Scores:
        """Admit (or 429), tokenize (off the loop when long), ``vet`` the costs (it raises
        :class:`BadRequest` to refuse), queue; the texts' scores.

        Raises:
            ClientGone: the client disconnected first; its place is free again at once.
        """
        with self.batcher.admission():
            return await unless_gone(self._score(texts, mode, vet), request.receive)

    async def _score(self, texts: list[str], mode: Mode, vet: CostCheck | None) -> Scores:
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            costs = self.engine.cost(texts, mode)
        else:
            loop = asyncio.get_running_loop()
            costs = await loop.run_in_executor(self.tokens_pool, self.engine.cost, texts, mode)
        if vet is not None:
            vet(costs)
        return await self.batcher.submit(texts, costs, mode)

    def check(self, texts: list[str], where: str) -> None:
        limits = self.settings
        check_texts(texts, max_texts=limits.max_texts, max_chars=limits.max_chars, where=where)


async def unless_gone(work: Coroutine[Any, Any, T], receive: Callable) -> T:
    """``work``'s result, unless the client disconnects first: then ``work`` is cancelled (a
    queued job with it) and :class:`ClientGone` raised. ``receive``: the request's ASGI channel,
    its body already read, so its next message is the disconnect. Cancelled itself, by uvicorn
    when a shutdown's grace period (``hm3 serve``: 10 s) ends before the answer, it raises
    :class:`ShuttingDown`: the client gets the 503 it can retry elsewhere, not a bare 500."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        raise ShuttingDown() from None
    finally:
        gone.cancel()
        task.cancel()  # nothing when it is done
    if not task.done() or task.cancelled():
        raise ClientGone()
    return task.result()


async def _disconnected(receive: Callable) -> None:
    """Return once the client has gone (or its channel broke)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a broken channel: the client is gone all the same
        return


def body_doc(model: type[BaseModel]) -> dict:
    """``openapi_extra`` naming a route's request body (the routes read bodies themselves)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _server(request: Request) -> Server:
    return request.app.state.server


async def _read(request: Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.body()
    except BodyTooLarge:  # counted (body_too_large) by the guard, which found it
        limit = _server(request).settings.max_body_bytes
        raise BadRequest(413, too_large(limit), reason=None) from None
    except ClientDisconnect:  # went away mid-upload: no bad request of its own
        raise ClientGone() from None
    except Exception as exc:  # a broken stream
        raise BadRequest(400, f"could not read the body ({type(exc).__name__})") from None
    return parse_body(raw, model)


@router.post(
    "/v1/classify",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=body_doc(ClassifyRequest),
    summary="Classify texts with every task",
)
async def classify(request: Request) -> JSONResponse:
    server = _server(request)
    body = await _read(request, ClassifyRequest)
    server.check(body.texts, "texts")
    scores = await server.score(request, body.texts, Mode())
    return JSONResponse({"results": _results(server, scores, len(body.texts))})


@router.post(
    "/predict",
    response_model=list[list[tei.TeiLabel]] | list[tei.TeiLabel],
    responses=ERRORS,
    openapi_extra=body_doc(tei.TeiRequest),
    summary="Text classification, compatible with text-embeddings-inference",
    description="Also answered at `POST /`, as TEI does for a classifier: a client given the "
    "server's bare URL (`InferenceClient('http://host:port')`) posts there.",
)
@router.post("/", include_in_schema=False)  # TEI's root route: /predict under another name
async def predict(request: Request) -> JSONResponse:
    server = _server(request)
    body = await _read(request, tei.TeiRequest)
    texts, batch = tei.texts_of(body)
    server.check(texts, "inputs")
    tei.check_parameters(body)
    mode = tei.mode_of(body)
    vet = partial(
        tei.check_lengths,
        body,
        max_length=server.engine.max_length,
        cut=not server.engine.windowed(mode),
    )
    scores = await server.score(request, texts, mode, vet)
    answers = tei.answer(body, scores, server.engine.tasks)
    return JSONResponse(answers if batch else answers[0])


@router.get(
    "/info",
    response_model=tei.TeiInfo,
    summary="The model, its labels and the limits, as text-embeddings-inference says them",
    description="`id2label` maps each logit's index to `task/label`; `max_client_batch_size` is "
    "`--max-texts`. huggingface_hub's `InferenceClient(url).get_endpoint_info()` reads it.",
)
async def info(request: Request) -> JSONResponse:
    server = _server(request)
    return JSONResponse(tei.info(server.engine, server.settings, TOKENIZE_WORKERS))


@router.get("/v1/tasks", response_model=TasksResponse, summary="Tasks, labels and recipe")
async def tasks(request: Request) -> JSONResponse:
    return JSONResponse(_server(request).engine.describe())


@router.get("/healthz", summary="The process answers")
@router.head("/healthz", include_in_schema=False)  # probes often send HEAD
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"model": ErrorResponse}},
    summary="Model warmed up",
    description="Also answered at `GET /health`, as text-embeddings-inference names it: "
    "huggingface_hub's `InferenceClient(url).health_check()` asks there.",
)
@router.head("/readyz", include_in_schema=False)
@router.get("/health", include_in_schema=False)  # TEI's name for /readyz
@router.head("/health", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    batcher = _server(request).batcher
    if batcher.ready:
        return JSONResponse({"status": "ready"})
    why = batcher.warm_up_error or "warming up"
    return JSONResponse({"error": f"not ready: {why}"}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    metrics = _server(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)


def _results(server: Server, scores: Scores, n: int) -> list[dict]:
    """``hm3 predict --json`` results, with ``flagged`` and ``reasons`` under a policy."""
    out = []
    for row in range(n):
        probs = {t.name: scores.probs[t.name][row] for t in server.engine.tasks}
        result: dict[str, Any] = {
            "tasks": {
                t.name: task_prediction(t.labels, probs[t.name]).model_dump()
                for t in server.engine.tasks
            }
        }
        if server.policy is not None:
            flagged, reasons = server.policy.apply(probs)
            result["flagged"] = flagged
            result["reasons"] = [r.model_dump() for r in reasons]
        out.append(result)
    return out
