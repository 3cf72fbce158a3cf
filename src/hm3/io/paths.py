"""A path the user gave to the Python API, checked: ``str`` or ``os.PathLike``, ``~`` expanded.

The CLI always passes strings; a library caller may pass ``None`` or a number by mistake, which
``Path()`` would answer with a bare ``TypeError``. This module touches no file.
"""

from __future__ import annotations

import os
from pathlib import Path

from hm3.errors import Hm3Error


def as_path(value: object, what: str) -> Path:
    """``value`` as a :class:`~pathlib.Path` with ``~`` expanded.

    Raises:
        Hm3Error: ``value`` is neither a ``str`` nor an ``os.PathLike`` (``None``, a number,
            bytes); ``what`` names the argument.
    """
    if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
        return Path(value).expanduser()
    found = type(value).__name__
    hint = ""
    if isinstance(getattr(value, "path", None), Path):  # a loaded model: its directory will do
        hint = f"; give its directory ({what}=model.path)"
    raise Hm3Error(f"{what}: expected a path (str or pathlib.Path), got {found}{hint}")


def dir_name(path: str | os.PathLike) -> str:
    """The name a model directory gives the task it answers by default: its last component as
    the user wrote it (``.`` and ``..`` made absolute first; a link keeps its own name, as in
    ``hm3 merge``, not its target's)."""
    return Path(os.path.abspath(os.path.expanduser(path))).name


def absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute against the current directory now (``~`` expanded, a link kept
    as given): where a config's relative paths stay valid after an ``os.chdir``."""
    return Path(os.path.abspath(os.path.expanduser(path)))
