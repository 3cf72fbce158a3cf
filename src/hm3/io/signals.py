"""Hold Ctrl-C and SIGTERM while a few lines that must not be cut in two run.

Python raises ``KeyboardInterrupt`` between any two bytecodes, so a signal can stop code that
takes a lock file and gives it back half way: Optuna's journal lock, interrupted inside its
``release``, either leaves the lock file behind (the next run waits out its grace period) or
tries to delete a file twice and turns Ctrl-C into a ``FileNotFoundError``. :func:`held` runs a
block with the signals recorded instead, then sends them again, so they land just after it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HELD = (signal.SIGTERM, signal.SIGINT)  # sent again in this order: SIGTERM's ending first


_holding: list[bool] = []  # a block is running (main thread only)


@contextmanager
def held() -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM held; each that came is raised again after it.

    Only signals handled in Python are held (a handler's ``KeyboardInterrupt``); one whose
    action is the system's (SIGTERM killing the process) or ignored is left as it is. Off the
    main thread it does nothing: Python runs signal handlers on the main thread only. A block
    inside another is part of it. A second press of the same signal acts at once, so a block
    stalled on a database that no longer answers can still be stopped. When both came,
    SIGTERM is sent first: the CLI ends by it after its clean-up, which a ``KeyboardInterrupt``
    raised first would skip.
    """
    if _holding or threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    before: dict[int, Any] = {}

    def hold(signum: int, frame: Any) -> Any:
        if signum not in came:
            came.append(signum)
            return None
        came.remove(signum)  # the user insists: it is handled now, not again after the block
        return before[signum](signum, frame)

    for signum in HELD:
        handler = signal.getsignal(signum)
        if callable(handler):
            before[signum] = handler
            signal.signal(signum, hold)
    _holding.append(True)
    try:
        yield
    finally:
        _holding.clear()
        for signum, handler in before.items():
            if signal.getsignal(signum) is hold:  # else a handler run by a second press set it
                signal.signal(signum, handler)
        for signum in HELD:
            if signum in came:
                signal.raise_signal(signum)  # its handler runs here, after the block
