"""The ``hm3`` command line: parse arguments, call one library function, print the result.

Exit codes: 0 success, 2 a user error (bad input, printed as one line without a traceback),
1 a bug, 130 interrupted (Ctrl-C, one line). SIGTERM (``timeout``, ``kill``, a CI cancel, systemd,
Kubernetes) cleans up as Ctrl-C does, then ends the process by that signal. No merge logic lives
here.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.markup import escape

from hm3.cli import align, bench, demo, evaluate, expand, merge, predict, search, serve
from hm3.cli import export as export_cli
from hm3.cli.common import err_console, help_paragraphs
from hm3.cli.usage import OneLineUsage
from hm3.errors import Hm3Error, cli_spelling
from hm3.version import __version__


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hm3 {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="hm3",
    cls=OneLineUsage,
    help="Merge fine-tuned text classifiers with different label spaces into one (HM3).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _command(fn):
    """Register ``fn`` as a command whose help is its docstring with each paragraph unwrapped.

    Typer keeps the single line breaks of a docstring's later paragraphs, so a terminal narrower
    than the source would show them as ragged lines.
    """
    return app.command(help=help_paragraphs(fn.__doc__))(fn)


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print hm3's version and exit."
        ),
    ] = False,
) -> None:
    if err_console.is_terminal:
        handler: logging.Handler = RichHandler(console=err_console, show_time=False,
                                               show_path=False)  # fmt: skip
    else:  # a log file or a pipe: one line a record, however long (Rich would wrap it)
        handler = logging.StreamHandler(err_console.file)
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[handler],
        force=True,
    )


for _verb in (merge, expand, predict, evaluate, align, demo, serve, search, bench):
    _command(getattr(_verb, _verb.__name__.rpartition(".")[2]))
app.add_typer(export_cli.app, name="export")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hm3`` console script; exits with 0, 1 or 2.

    An :class:`Hm3Error` is the user's to fix: its one line, no traceback, status 2. Any other
    exception is a bug: the plain traceback (to report), one line saying so, status 1. Ctrl-C
    (``KeyboardInterrupt``) prints one line, ``interrupted`` and what the command kept if it
    says (the exception's message), status 130. SIGTERM does the same, and then the process
    ends by SIGTERM, as its sender expects.
    """
    try:
        with _sigterm_interrupts(), cli_spelling():
            _main(argv)
    finally:
        if argv is None and threading.current_thread() is threading.main_thread():
            # the command is over: a Ctrl-C now ends the process as it would any program,
            # instead of a traceback from inside Python's exit (torch's atexit finalizers)
            signal.signal(signal.SIGINT, signal.SIG_DFL)


def _main(argv: list[str] | None) -> None:
    try:
        app(args=argv, prog_name="hm3")
    except KeyboardInterrupt as exc:  # raised outside the command (Typer catches the rest)
        _interrupted(exc)
    except SystemExit as exc:  # Typer turns a KeyboardInterrupt into an exit with status 130
        cause = getattr(exc.__context__, "__cause__", None)
        if exc.code == 130 and isinstance(cause, KeyboardInterrupt):
            _interrupted(cause)
        raise
    except Hm3Error as exc:
        _error_line(str(exc))
        sys.exit(2)
    except Exception as exc:  # anything else is a bug: say so, keep the traceback for a report
        traceback.print_exception(exc, file=sys.stderr)
        detail = (str(exc).splitlines() or [""])[0][:200]
        _error_line(
            f"internal error ({type(exc).__name__}: {detail}) — this is a bug in hm3 (or a "
            "fault of the system it runs on); please report it with the traceback above"
        )
        sys.exit(1)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into a ``KeyboardInterrupt`` for the block, then deliver it as before.

    Without a handler SIGTERM kills Python on the spot: no ``finally`` runs, so an output's
    temporary directory would stay behind. With it, the command unwinds as on Ctrl-C (its
    temporary files removed, its one line printed); a second SIGTERM meanwhile is ignored. Then
    the handler that was there before is put back and the signal raised again: by default the
    process ends by SIGTERM, as its sender expects. Where SIGTERM was ignored, or handled
    outside Python, nothing changes. SIGTERM and Ctrl-C (under Python's own SIGINT handler)
    that come during an import wait for it to end (:func:`_importing`).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    previous_int = signal.getsignal(signal.SIGINT)
    received: list[int] = []

    def interrupt(signum, frame):
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    if previous not in (signal.SIG_IGN, None):
        signal.signal(signal.SIGTERM, _after_imports(interrupt))
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, _after_imports(signal.default_int_handler))
    try:
        yield
    except BaseException as exc:
        if received and previous is signal.SIG_DFL:  # the process ends by it: no atexit runs
            _let_go(exc)
        raise
    finally:
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)
        if previous not in (signal.SIG_IGN, None):
            signal.signal(signal.SIGTERM, previous)
        if received:
            sys.stdout.flush()
            sys.stderr.flush()
            signal.raise_signal(signal.SIGTERM)


def _let_go(exc: BaseException | None) -> None:
    """Free what the frames an exception unwound still hold, and collect it: a temporary
    directory there (ONNX Runtime's optimiser makes one) is removed by its finalizer, which
    otherwise only ``atexit`` would run, and a process ended by SIGTERM runs none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)  # frames still running are left alone
        exc = exc.__cause__ or exc.__context__
    gc.collect()


_RETRY_S = 0.05  # a signal that came during an import is sent again this much later


def _after_imports(handler: Callable[[int, FrameType | None], Any]) -> Callable[..., Any]:
    """``handler``, except that a signal landing inside an import (or a finalizer,
    :func:`_finalizing`) is sent again a little later and the import goes on. Signals that
    come while one is pending are that one (three Ctrl-C presses during torch's import are one
    interrupt, not three in its clean-up)."""
    pending = threading.Event()

    def resend(signum: int) -> None:
        pending.clear()
        os.kill(os.getpid(), signum)

    def deferring(signum: int, frame: FrameType | None) -> Any:
        if _importing(frame) or _finalizing(frame):
            if not pending.is_set():
                pending.set()
                again = threading.Timer(_RETRY_S, resend, (signum,))
                again.daemon = True
                again.start()
            return None
        if pending.is_set():
            return None  # the one already on its way stands for this one
        return handler(signum, frame)

    return deferring


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside an import. There, an exception from a signal handler may
    surface in a C++ extension's callback (torch's pybind11 module set-up), which then calls
    ``std::terminate``: the process dies by SIGABRT, its clean-up never run. So the SIGTERM
    waits until the import is done."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _finalizing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside a ``__del__`` or a ``weakref.finalize`` callback (the
    garbage collector can start one between any two bytecodes). Python prints an exception
    raised there and drops it: the Ctrl-C would be lost and the command run on."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename == weakref.__file__:
            return True
        frame = frame.f_back
    return False


def _interrupted(exc: KeyboardInterrupt) -> None:
    detail = str(exc)
    err_console.print(f"[bold]interrupted[/]{escape(': ' + detail) if detail else ''}",
                      highlight=False, soft_wrap=True)  # fmt: skip
    sys.exit(130)


def _error_line(message: str) -> None:
    # escaped: messages quote user input and tensor names such as `[score.weight]`
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
