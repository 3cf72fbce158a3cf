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

HELD = (signal.SIGTERM, signal.SIGINT)  # sent again in this order: SIGTERM's ending first


@contextmanager
def held() -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM held; each that came is raised again after it.

    Only signals handled in Python are held (a handler's ``KeyboardInterrupt``); one whose
    action is the system's (SIGTERM killing the process) or ignored is left as it is. Off the
    main thread it does nothing: Python runs signal handlers on the main thread only. Blocks
    nest: an inner one hands what came to the outer one. When both came, SIGTERM is sent first:
    the CLI ends by it after its clean-up, which a ``KeyboardInterrupt`` raised first would
    skip.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if signum not in came:
            came.append(signum)

    before = {}
    for signum in HELD:
        handler = signal.getsignal(signum)
        if callable(handler):
            before[signum] = handler
            signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        for signum in HELD:
            if signum in came:
                signal.raise_signal(signum)  # its handler runs here, after the block
