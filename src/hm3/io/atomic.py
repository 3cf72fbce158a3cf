"""Write an output directory all at once or not at all.

Everything hm3 writes as a directory (merged, expanded or aligned models, reports) is built
in a hidden temporary sibling and renamed into place only when complete, so a crash or a bad
input never leaves half an output. An existing output is refused unless ``force`` is set, and
then replaced only after the new one is complete. This module knows nothing about models.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hm3.errors import Hm3Error


def check_output(out: Path, force: bool, *, inputs: Sequence[Path] = ()) -> None:
    """Fail early if ``out`` exists without ``force``, or would overwrite one of ``inputs``."""
    out = Path(out)
    resolved = out.resolve()
    for path in inputs:
        p = Path(path).resolve()
        if resolved == p or resolved in p.parents:
            raise Hm3Error(f"--out {out}: would overwrite the input {path}; choose another path")
    if out.exists() and not force:
        raise Hm3Error(f"--out {out}: already exists; choose another path or pass --force")
    if out.exists() and not out.is_dir():
        raise Hm3Error(
            f"--out {out}: exists and is not a directory; remove it or choose another path"
        )


@contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block finishes without error.

    Args:
        out: the final directory.
        force: replace ``out`` if it exists (only after the new content is complete).

    Yields:
        The temporary directory to write into (same filesystem as ``out``). It has the mode a
        plain ``mkdir`` gives (``0o777 & ~umask``), which the rename keeps: others can read the
        output as they could any directory the user makes.
    """
    out = Path(out)
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(out.parent, f".{out.name}.tmp-")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        if not force:
            shutil.rmtree(tmp, ignore_errors=True)
            raise Hm3Error(f"--out {out}: appeared while writing; pass --force to replace it")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """Make a new directory ``parent/prefix<random>`` with ``mkdir``'s usual mode.

    Unlike :func:`tempfile.mkdtemp` (always ``0o700``), the umask alone decides who may read it.
    """
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: no free name for a temporary directory {prefix}*")
