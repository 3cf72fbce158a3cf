"""``hm3 serve``: an HTTP guard server for a merged (or any) classifier.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; the server lives in :mod:`hm3.serve`
(imported only when the command runs, so ``hm3 --help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hm3.cli.common import BatchOpt, DeviceOpt, MaxLengthOpt, PickleOpt, err_console, run_options
from hm3.cli.long_texts import (
    CombineOpt,
    DefaultLabelOpt,
    StrideOpt,
    parse_windows,
    windows_option,
)


def serve(
    model: Annotated[
        Path,
        typer.Argument(
            help="Merged or ordinary classifier directory (or, with --onnx, "
            "the directory written by hm3 export onnx)."
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    onnx: Annotated[bool, typer.Option("--onnx", help="Run MODEL with ONNX Runtime.")] = False,
    policy: Annotated[
        Path | None,
        typer.Option(help="YAML flagging rules per task: adds flagged/reasons to each result."),
    ] = None,
    max_batch_tokens: Annotated[
        int, typer.Option(help="Token budget of one forward pass (texts x longest text).")
    ] = 16384,
    max_wait_ms: Annotated[
        float, typer.Option(help="Longest wait for other requests to share a forward pass.")
    ] = 5.0,
    max_concurrent: Annotated[
        int, typer.Option(help="Requests in progress at once; more are answered 429 at once.")
    ] = 512,
    max_texts: Annotated[int, typer.Option(help="Texts per request.")] = 64,
    max_chars: Annotated[int, typer.Option(help="Characters per text.")] = 200_000,
    max_body_bytes: Annotated[
        int, typer.Option(help="Request body size; larger bodies are answered 413.")
    ] = 4 * 2**20,
    api_key_env: Annotated[
        str,
        typer.Option(
            help="Environment variable holding the API key; when set, requests need "
            "'Authorization: Bearer KEY'."
        ),
    ] = "HM3_API_KEY",
    device: DeviceOpt = "cpu",
    batch_size: BatchOpt = 64,
    max_length: MaxLengthOpt = 512,
    allow_pickle: PickleOpt = False,
    windows: Annotated[bool, windows_option(True)] = True,
    stride: StrideOpt = None,
    combine: CombineOpt = "max",
    default_label: DefaultLabelOpt = None,
) -> None:
    """Serve MODEL over HTTP: POST /v1/classify, POST /predict (text-embeddings-inference
    compatible), GET /v1/tasks, /healthz, /readyz, /metrics and /docs.

    Requests that arrive together share one forward pass (by token budget, waiting at most
    --max-wait-ms); every task is answered from that one pass. A text longer than --max-length
    tokens is scored in overlapping windows unless --no-windows truncates it. Stop it with
    Ctrl-C.
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
        windows=parse_windows(windows, stride, combine, default_label),
        options=run_options(
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            allow_pickle=allow_pickle,
            progress=False,
        ),
    )
    # one line, never wrapped: scripts read the address from it
    announce = lambda line: err_console.print(line, highlight=False, soft_wrap=True)  # noqa: E731
    run_server(model, settings, announce=announce)
