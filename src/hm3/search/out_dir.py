"""``--out`` of a search: its study opened and the directory made, replaced or locked.

:func:`open_study` opens the storage and the study and makes ``--out`` (a storage or study
refused leaves no ``--out`` behind; ``--force`` deletes the old one only past them).
:class:`OutLock`: a search whose study is the journal in ``--out`` (no ``--storage``) holds an
advisory lock on ``--out/.lock`` (``flock``) while it runs, with its pid there. A second
``hm3 search`` on that ``--out`` (a ``--resume`` typed while the first still runs, or a
``--force``) is refused at once instead of failing the first one's running trial as a dead
worker's. The kernel drops the lock when its process ends, however it ends (SIGKILL too), so a
stale file never blocks a resume. Workers that share a study use ``--storage``: no lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error
from hm3.io.atomic import remove_tree
from hm3.search import outputs
from hm3.search import study as studies
from hm3.search.inputs import SearchSpec

NAME = ".lock"


class OutLock:
    """The lock on ``out``: :meth:`take` once ``out`` exists, :meth:`release` at the end."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._fd: int | None = None

    def take(self) -> None:
        """Hold the lock (again a no-op once held, or while ``out`` does not exist yet).

        Raises:
            Hm3Error: another process holds it: a search is running in ``out``.
        """
        if self._fd is not None or not self.out.is_dir():
            return
        try:
            fd = os.open(self.out / NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unlockable(self.out, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise Hm3Error(
                f"--out {self.out}: another hm3 search (pid {pid}) is running in it; wait for "
                "it to end (then --resume), or share one study between workers with --storage "
                "FILE --study NAME"
            ) from None
        except OSError as exc:  # a file system without locks (some network ones)
            os.close(fd)
            raise _unlockable(self.out, exc) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        _sweep(self.out)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None


def _unlockable(out: Path, exc: OSError) -> Hm3Error:
    return Hm3Error(f"--out {out}: cannot lock it ({exc.strerror or type(exc).__name__}); check "
                    "that you may write there, or choose an --out on a local disk")  # fmt: skip


def _sweep(out: Path) -> None:
    """What a search killed mid-write left in ``out``, which only the lock's holder may remove:
    half-written outputs (``.best.tmp-*``, ``.trials.csv.tmp-*``, ...), and the journal's own
    lock files, which would stall the next run for Optuna's 30 s of grace."""
    journal_lock = f"{studies.JOURNAL}.lock"
    for child in out.iterdir():
        name = child.name
        debris = name.startswith(".") and (".tmp-" in name or ".old-" in name)
        if debris or name == journal_lock or (name.startswith(journal_lock) and
                                              name.endswith(".rename")):  # fmt: skip
            _remove(child)


def is_database(storage: str | None) -> bool:
    return storage is not None and "://" in storage


def open_study(
    spec: SearchSpec,
    out: Path,
    ident: tuple[dict[str, Any], dict[str, str]],
    replace: bool,
    database: Any,
) -> Any:
    """Open the storage (``database``, when already open) and the study, and make ``--out``: a
    storage or study refused leaves no ``--out`` behind, and ``replace`` (``--force``) deletes
    the old one only past them."""
    shared = spec.storage is not None
    if shared:  # checked before --out is touched
        journal = None if is_database(spec.storage) else Path(spec.storage)
        fresh = journal is not None and not journal.exists()
        try:
            storage = database if database is not None else studies.open_storage(spec.storage, out)
            study = studies.load_study(storage, spec.study, *ident, resume=spec.resume,
                                       shared=True)  # fmt: skip
        except BaseException:
            if fresh and journal.is_file():  # e.g. --resume of a study it does not hold
                journal.unlink()
            raise
    if replace:
        _clear(out)
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Hm3Error(f"--out {out}: cannot make it ({exc.strerror or exc}); check the path "
                       "and that you may write there") from None  # fmt: skip
    try:
        if shared:
            outputs.write_study_file(out, spec.storage, spec.study)
        else:
            storage = studies.open_storage(None, out)
            study = studies.load_study(storage, spec.study, *ident, resume=spec.resume,
                                       shared=False)  # fmt: skip
    except BaseException:
        if made:
            remove_tree(out)
        raise
    return study


def _clear(out: Path) -> None:
    """--force: the old study and its outputs go (the new ones are written as trials finish)."""
    for child in out.iterdir() if out.is_dir() else ():  # the lock stays: it is held
        if child.name != NAME:
            _remove(child)


def _remove(path: Path) -> None:
    """A file, a link or a whole directory (a link to one: the link only)."""
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
