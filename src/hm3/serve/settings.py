"""The limits and switches of one ``hm3 serve`` process (what it does not: parse the CLI).

Every limit is checked here once, so the server never starts with a limit it cannot honour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hm3.errors import Hm3Error
from hm3.model.windows import Windows
from hm3.options import RunOptions

DEFAULT_MAX_BODY_BYTES = 4 * 2**20
#: the environment variable read for an API key when --api-key-env names none
DEFAULT_KEY_ENV = "HM3_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """How one server runs.

    Attributes:
        host, port: where uvicorn listens.
        onnx: serve the directory written by ``hm3 export onnx`` (ONNX Runtime) instead of torch.
        policy: a YAML file of flagging rules (:mod:`hm3.serve.policy`), or ``None``.
        max_batch_tokens: token budget of one forward pass, counted as texts × longest text
            (padding included: that is what a padded batch costs).
        max_wait_ms: the longest a request waits for others to share its forward pass.
        max_concurrent: requests admitted at once (queued or running); more get 429 at once.
        max_texts: texts per request.
        max_chars: characters per text.
        max_body_bytes: request body size; more gets 413 before the body is read.
        api_key_env: the environment variable holding the API key, which must then be set;
            ``None``: :data:`DEFAULT_KEY_ENV` when it is set, else no key.
        keep_alive_s: how long an idle connection stays open. Longer than the idle timeout of
            the client's pool or proxy (nginx, load balancers: 60 s), so the server never
            closes a connection just as a client reuses it (the client then sees a reset).
        shutdown_grace_s: on SIGTERM or Ctrl-C, how long requests in flight may still take;
            those left then get 503 (retry on another instance). Keep it below the grace your
            orchestrator gives (Kubernetes: 30 s).
        windows: how texts longer than ``max_length`` tokens are scored (overlapping windows,
            combined per task); ``None``: truncated.
        options: device, dtype, batch size (rows per forward pass at most), max length.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    onnx: bool = False
    policy: Path | None = None
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0
    max_concurrent: int = 512
    max_texts: int = 64
    max_chars: int = 200_000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    api_key_env: str | None = None
    keep_alive_s: int = 75
    shutdown_grace_s: float = 10.0
    windows: Windows | None = field(default_factory=Windows)
    options: RunOptions = field(default_factory=lambda: RunOptions(batch_size=64))

    def __post_init__(self) -> None:
        whole = {
            "--max-batch-tokens": self.max_batch_tokens,
            "--max-concurrent": self.max_concurrent,
            "--max-texts": self.max_texts,
            "--max-chars": self.max_chars,
            "--max-body-bytes": self.max_body_bytes,
            "--keep-alive": self.keep_alive_s,
        }
        for flag, value in whole.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise Hm3Error(f"{flag} {value}: expected a whole number >= 1")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise Hm3Error(f"--max-wait-ms {self.max_wait_ms}: expected 0 to 10000 milliseconds")
        if not 0 <= self.shutdown_grace_s <= 3600:  # nan too
            grace = f"--shutdown-grace {self.shutdown_grace_s:g}"
            raise Hm3Error(f"{grace}: expected 0 to 3600 seconds")
        if not 0 <= self.port <= 65535:
            raise Hm3Error(f"--port {self.port}: expected 0 to 65535 (0: any free port)")
        if self.max_batch_tokens < self.options.max_length:
            raise Hm3Error(
                f"--max-batch-tokens {self.max_batch_tokens}: smaller than --max-length "
                f"{self.options.max_length}, so one long text could never run; raise it"
            )
