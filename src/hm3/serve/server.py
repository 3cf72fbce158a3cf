"""Start ``hm3 serve``: load and check everything, then run uvicorn until interrupted.

:func:`build` loads the model (torch, or ONNX Runtime), reads the policy against the model's
tasks and the API key from the environment, and returns the ASGI app; anything wrong is an
:class:`~hm3.errors.Hm3Error` before a port is opened. :func:`serve` runs it with uvicorn.
What it does not: handle requests (:mod:`hm3.serve.routes`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error
from hm3.serve.settings import DEFAULT_KEY_ENV, ServeSettings

log = logging.getLogger("hm3")
_BACKLOG = 2048


def _no_extra(exc: ImportError) -> Hm3Error:
    return Hm3Error(
        f"hm3 serve needs the serve extra ({exc.name} is missing); pip install 'hm3[serve]'"
    )


def build(model: Path, settings: ServeSettings) -> Any:
    """The ASGI app serving ``model``; raises :class:`Hm3Error` for anything it cannot serve."""
    try:
        from hm3.serve.app import create_app
    except ImportError as exc:  # fastapi or prometheus-client missing
        raise _no_extra(exc) from None
    from hm3.serve.engine import load_engine
    from hm3.serve.policy import load_policy

    options = settings.options.resolved()
    key = api_key(settings)  # before the model loads: a missing key fails at once
    engine = load_engine(
        Path(model),
        onnx=settings.onnx,
        options=options,
        budget=settings.max_batch_tokens,
        windows=settings.windows,
    )
    policy = load_policy(settings.policy, engine.tasks) if settings.policy else None
    return create_app(engine, settings, policy, key)


def api_key(settings: ServeSettings) -> str | None:
    """The API key: from ``settings.api_key_env``, which must hold one, or else from
    :data:`DEFAULT_KEY_ENV` when it is set; None (with a warning off loopback) without one.
    A variable set but empty is refused: a secret that failed to mount must not open the
    server to anyone."""
    name = settings.api_key_env or DEFAULT_KEY_ENV
    key = os.environ.get(name)
    if settings.api_key_env is not None and key is None:
        raise Hm3Error(
            f"--api-key-env {name}: ${name} is not set; export the key in it, or leave "
            "--api-key-env out to serve without a key"
        )
    if key is not None and not key:
        raise Hm3Error(
            f"${name} is set but empty; put the API key in it, or unset it to serve without a key"
        )
    if key is not None and key.strip() != key:
        raise Hm3Error(f"${name}: the API key starts or ends with white space; remove it")
    if key is None and not _loopback(settings.host):
        log.warning(
            "no API key ($%s is not set): anyone who reaches %s:%d can call the server",
            name,
            settings.host,
            settings.port,
        )
    return key


def serve(
    model: Path, settings: ServeSettings, announce: Callable[[str], None] | None = None
) -> None:
    """Build the app and serve it with uvicorn until SIGINT/SIGTERM (blocks).

    ``announce`` receives one line with the address once the port is open. After a graceful
    shutdown uvicorn re-raises the signal: SIGTERM ends the process with that signal's status
    (as servers conventionally do), Ctrl-C returns normally.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise _no_extra(exc) from None
    # the address first (a mistyped host costs no model load), not listening until the app is
    # built: a client that connects meanwhile is refused at once instead of left waiting
    sock = bind(settings.host, settings.port, listen=False)
    try:
        app = build(model, settings)
    except BaseException:
        sock.close()
        raise
    sock.listen(_BACKLOG)
    config = uvicorn_config(app, settings)
    host, port = sock.getsockname()[:2]
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        keyed = "API key required" if getattr(app, "api_key", None) else "no API key"
        announce(f"serving {model} on http://{shown}:{port} ({keyed}; API docs: /docs)")
    with contextlib.suppress(KeyboardInterrupt):  # raised again by uvicorn after shutdown
        uvicorn.Server(config).run(sockets=[sock])


def uvicorn_config(app: Any, settings: ServeSettings) -> Any:
    """uvicorn's configuration for ``app`` under ``settings`` (logging follows hm3's level)."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level="info" if log.isEnabledFor(logging.INFO) else "warning",
        access_log=log.isEnabledFor(logging.INFO),
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        timeout_keep_alive=settings.keep_alive_s,
    )


def bind(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), listening unless ``listen`` is
    False; a taken port or a host that is not this machine's is a user error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Hm3Error(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror}); choose a free "
            "port or another host"
        ) from None
    if listen:
        sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
