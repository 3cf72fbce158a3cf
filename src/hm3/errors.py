"""The one exception type hm3 raises for problems the user can fix, and how its fixes are spelt.

An :class:`Hm3Error` message names the input at fault, what was expected and how to fix it.
The CLI prints it on one line and exits with status 2; anything else is a bug (status 1).
A fix names an option as its caller writes it: ``--force`` on the command line, ``force=True``
from Python (:func:`spell`; the CLI turns the first on with :func:`cli_spelling`).
This module does nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_cli = False  # process-wide: a CLI command's model threads raise errors for the CLI too


class Hm3Error(ValueError):
    """A user mistake or bad input: bad config, unreadable or incompatible checkpoint, ...

    Subclasses ``ValueError`` so library callers that catch ``ValueError`` keep working.
    """


def spell(flag: str, keyword: str) -> str:
    """``flag`` while a CLI command runs, else ``keyword``: how a message names an option,
    e.g. ``spell("--force", "force=True")`` or ``spell("--originals TASK=DIR",
    "originals={TASK: DIR}")``."""
    return flag if _cli else keyword


def spelling_for_cli() -> bool:
    """Whether messages now name options as command-line flags (for a worker process)."""
    return _cli


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Within the block, messages name options as command-line flags (:func:`spell`)."""
    global _cli
    before, _cli = _cli, True
    try:
        yield
    finally:
        _cli = before
