"""The one exception type hm3 raises for problems the user can fix.

An :class:`Hm3Error` message names the input at fault, what was expected and how to fix it.
The CLI prints it on one line and exits with status 2; anything else is a bug (status 1).
This module does nothing else.
"""

from __future__ import annotations


class Hm3Error(ValueError):
    """A user mistake or bad input: bad config, unreadable or incompatible checkpoint, ...

    Subclasses ``ValueError`` so library callers that catch ``ValueError`` keep working.
    """
