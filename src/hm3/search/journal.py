"""A search's journal file: checked before anything is appended, its lock never cut in two.

- **Checked.** A directory, a file that is not an Optuna journal, or one whose last record was
  cut short is refused with one line before the first append: Optuna would skip the bad line
  and glue the next record to it, leaving a journal nobody can read.
- **Its lock.** Every append takes Optuna's lock file and gives it back. Ctrl-C or SIGTERM that
  lands inside that (a few milliseconds per trial) used to leave the lock file behind, or turn
  the interrupt into Optuna's ``FileNotFoundError``; appends run with the signals held
  (:func:`hm3.io.signals.held`), so the interrupt comes just after the record is whole and the
  lock given back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error
from hm3.io.signals import held


def open_journal(path: Path, what: str) -> Any:
    """Optuna's ``JournalStorage`` on ``path`` (``what`` names it in errors)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    class Backend(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            with held():
                super().append_logs(logs)

    lock = JournalFileOpenLock(str(path))
    try:
        if path.is_dir():
            raise Hm3Error(f"{what}: is a directory; give a journal file path (e.g. "
                           f"{path / 'study.journal'}) or a database URL")  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size:
            with held():
                lock.acquire()  # a worker appending now must not look like a cut-short record
                try:
                    _check_journal(path.read_bytes(), what)
                finally:
                    lock.release()
        return JournalStorage(Backend(str(path), lock_obj=lock))
    except Hm3Error:
        raise
    except OSError as exc:
        raise Hm3Error(f"{what}: cannot use it ({exc.strerror or exc}); check the path and "
                       "that you may write there") from None  # fmt: skip
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise Hm3Error(f"{what}: not an Optuna journal hm3 can read ({type(exc).__name__}); "
                       "give a journal file a search wrote, or a new path") from None  # fmt: skip


def _check_journal(data: bytes, what: str) -> None:
    """Refuse a file that is not a whole Optuna journal before anything is appended to it.

    Optuna skips a last line without its newline (and, alone, a line that is not JSON), so the
    next record appended would be glued to it and the journal unreadable from then on.
    """
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "op_code" not in record:
            raise Hm3Error(f"{what}: line {number} is not an Optuna journal record; give a "
                           "journal file a search wrote, or a new path")  # fmt: skip
    if lines[-1]:
        raise Hm3Error(
            f"{what}: its last record is cut short (the file was truncated); remove that "
            "incomplete last line to go on from the record before it"
        )
