"""The one progress bar style of hm3: transient, on stderr, off with ``--no-progress``.

A rich :class:`~rich.progress.Progress` with the description, a bar, done/total, any extra
columns the caller needs (a running loss, a unit) and the elapsed time. Descriptions are shown
as written, never read as Rich markup or emoji codes: they name the user's models and files.

It is drawn only where it can move: a terminal or a notebook. Written to a file or a pipe (a
log, CI), a transient bar has no frame to keep and would leave one empty line behind; there it
draws nothing. ``TTY_COMPATIBLE=1`` or ``FORCE_COLOR`` make Rich treat any stream as a terminal.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


def drawn(enabled: bool) -> bool:
    """Whether :func:`progress_bar` would draw: ``enabled`` and stderr a terminal or a notebook."""
    return enabled and _can_draw(Console(stderr=True))


def _can_draw(console: Console) -> bool:
    return console.is_terminal or console.is_jupyter


def progress_bar(
    enabled: bool, *extra: ProgressColumn, label: str = "{task.description}"
) -> Progress:
    """A progress bar that draws nothing when ``enabled`` is false.

    Args:
        enabled: draw it where it can be drawn (the CLI's ``--progress/--no-progress``).
        extra: columns shown after done/total, e.g. ``TextColumn("loss {task.fields[loss]}")``.
        label: the leading text column's format.
    """
    console = Console(stderr=True, emoji=False)
    return Progress(
        TextColumn(label, markup=False),  # descriptions name the user's models and files
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (enabled and _can_draw(console)),
    )
