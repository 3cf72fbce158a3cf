"""``hm3 serve``: an HTTP guard server for a merged (or any) classifier.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; the server lives in :mod:`hm3.serve`
(imported only when the command runs, so ``hm3 --help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hm3.cli.common import err_console, with_run_options
from hm3.cli.long_texts import with_windows
from hm3.options import RunOptions

if TYPE_CHECKING:
    from hm3.model.windows import Windows

ModelArg = Annotated[
    Path,
    typer.Argument(
        help="Merged or ordinary classifier directory (or, with --onnx, "
        "the directory written by hm3 export onnx)."
    ),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(help="YAML flagging rules per task: adds flagged/reasons to each result."),
]
BatchTokensOpt = Annotated[
    int, typer.Option(help="Token budget of one forward pass (texts x longest text).")
]
WaitOpt = Annotated[
    float, typer.Option(help="Longest wait for other requests to share a forward pass.")
]
ConcurrentOpt = Annotated[
    int, typer.Option(help="Requests in progress at once; more are answered 429 at once.")
]
BodyBytesOpt = Annotated[
    int, typer.Option(help="Request body size; larger bodies are answered 413.")
]
KeepAliveOpt = Annotated[
    int,
    typer.Option(
        "--keep-alive",
        help="Seconds an idle connection stays open; keep it above your proxy's idle timeout.",
    ),
]
GraceOpt = Annotated[
    float,
    typer.Option(
        "--shutdown-grace",
        help="Seconds requests in flight may take after SIGTERM or Ctrl-C; later ones get 503.",
    ),
]
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option(
        help="Environment variable holding the API key, which must then be set; without it, "
        "HM3_API_KEY when set. With a key, requests need 'Authorization: Bearer KEY'.",
        show_default=False,
    ),
]


@with_run_options(
    {"progress": False},
    device="cpu",
    dtype="float32",
    batch_size=64,
    max_length=512,
    allow_pickle=False,
)
@with_windows(True)
def serve(
    model: ModelArg,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    onnx: Annotated[bool, typer.Option("--onnx", help="Run MODEL with ONNX Runtime.")] = False,
    policy: PolicyOpt = None,
    max_batch_tokens: BatchTokensOpt = 16384,
    max_wait_ms: WaitOpt = 5.0,
    max_concurrent: ConcurrentOpt = 512,
    max_texts: Annotated[int, typer.Option(help="Texts per request.")] = 64,
    max_chars: Annotated[int, typer.Option(help="Characters per text.")] = 200_000,
    max_body_bytes: BodyBytesOpt = 4 * 2**20,
    api_key_env: ApiKeyEnvOpt = None,
    keep_alive: KeepAliveOpt = 75,
    shutdown_grace: GraceOpt = 10.0,
    *,
    options: RunOptions,
    windows: Windows | None,
) -> None:
    """Serve MODEL over HTTP: POST /v1/classify, POST /predict and POST / (as
    text-embeddings-inference), GET /v1/tasks, /healthz, /readyz, /metrics and /docs.

    Requests that arrive together share one forward pass (by token budget, waiting at most
    --max-wait-ms); every task is answered from that one pass. A text longer than --max-length
    tokens is scored in overlapping windows unless --no-windows truncates it. Stop it with
    Ctrl-C or SIGTERM: requests in flight get --shutdown-grace seconds, then a 503.
    """
    from hm3.serve.server import serve as run_server
    from hm3.serve.settings import ServeSettings

    settings = ServeSettings(
        host=host,
        port=port,
        onnx=onnx,
        policy=policy,
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        max_concurrent=max_concurrent,
        max_texts=max_texts,
        max_chars=max_chars,
        max_body_bytes=max_body_bytes,
        api_key_env=api_key_env,
        keep_alive_s=keep_alive,
        shutdown_grace_s=shutdown_grace,
        windows=windows,
        options=options,
    )
    # one line, never wrapped: scripts read the address from it
    announce = lambda line: err_console.print(line, highlight=False, soft_wrap=True)  # noqa: E731
    run_server(model, settings, announce=announce)
