"""The ``hm3`` console script: load the command line with Ctrl-C held, then run it.

Loading :mod:`hm3.cli.app` (Typer, Rich and every command's module) takes a few tenths of a
second, before :func:`hm3.cli.app.main` has put its handlers in place. A Ctrl-C there would
print Python's own ``KeyboardInterrupt`` traceback. Here it is held until the load is done, and
then ends the command with the CLI's one line, ``interrupted``, status 130. Nothing has been
read or written by then. A second press acts at once, and SIGTERM keeps its default action
(the process ends), since there is nothing to clean up yet. What comes before this module runs
(Python's own start, about 20 ms) is Python's; the package root imports no more than it needs,
so that this module is reached soon.
"""

from __future__ import annotations

import sys

from hm3.io.signals import held


def main() -> None:
    """Entry point of the ``hm3`` console script (``[project.scripts]``)."""
    try:
        with held():
            from hm3.cli.app import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    run()
