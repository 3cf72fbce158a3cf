"""Usage errors as one line: the command groups of ``hm3``.

Typer prints a usage error (a missing argument, an unknown option, a value out of range) as a
boxed panel of several lines. hm3 prints every user error as one line naming the problem and
the fix, so :class:`OneLineUsage`, the class of ``hm3`` and of its sub-groups, turns the error
into an :class:`~hm3.errors.Hm3Error` (``hm3 merge: Missing argument 'config' (see hm3 merge
--help)``) before Typer's handler sees it; :func:`hm3.cli.app.main` prints it, exit status 2.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from hm3.errors import Hm3Error

try:  # Typer 0.2x carries its own copy of click; older ones use click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click.exceptions import NoArgsIsHelpError, UsageError


class OneLineUsage(TyperGroup):
    """A Typer group whose usage errors, and its subcommands', are :class:`Hm3Error`.

    Typer catches usage errors around the group's parsing and invocation (where the
    subcommand's own arguments are parsed), so both are wrapped.
    """

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        path = " ".join(p for p in (parent.command_path if parent else "", info_name) if p)
        with _as_one_line(path or "hm3"):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        words = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        name = words[0] if words and words[0] in self.commands else None
        with _as_one_line(f"{ctx.command_path} {name}" if name else ctx.command_path):
            return super().invoke(ctx)


class _as_one_line:
    """Re-raise a usage error as one line naming its command (``command`` when the error does
    not say: a subcommand's option parser raises without a context)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, UsageError) and not isinstance(exc, NoArgsIsHelpError):
            command = exc.ctx.command_path if exc.ctx is not None else self.command
            message = " ".join(exc.format_message().split()).removesuffix(".")
            raise Hm3Error(f"{command}: {message} (see {command} --help)") from exc
        return False
