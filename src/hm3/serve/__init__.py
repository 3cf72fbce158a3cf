"""``hm3 serve``: an HTTP guard server that answers every task of a merged model in one pass.

Modules: :mod:`~hm3.serve.settings` (the server's limits), :mod:`~hm3.serve.engine` (the model
behind a lock-free single-thread interface: token counts, scores), :mod:`~hm3.serve.batcher`
(dynamic batching by token budget, admission control), :mod:`~hm3.serve.policy` (flagging rules),
:mod:`~hm3.serve.schemas` and :mod:`~hm3.serve.tei` (the request and response shapes),
:mod:`~hm3.serve.guard` (API key, body size and metrics as ASGI middleware),
:mod:`~hm3.serve.metrics` (Prometheus), :mod:`~hm3.serve.app` (the FastAPI routes) and
:mod:`~hm3.serve.server` (load, validate, run uvicorn).

Nothing here is imported by ``hm3 --help``: FastAPI, uvicorn and prometheus-client load only
when a server is built.
"""
