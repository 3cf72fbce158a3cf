"""Write an output directory all at once or not at all.

Everything hm3 writes as a directory (merged, expanded or aligned models, reports) is built
in a hidden temporary sibling and renamed into place only when complete, so a crash or a bad
input never leaves half an output. An existing output is refused unless ``force`` is set, and
then replaced only after the new one is complete. This module knows nothing about models.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hm3.errors import Hm3Error, spell
from hm3.io.signals import held
from hm3.options import named


def _named(out: Path) -> str:
    """``--out DIR`` on the command line, ``out='DIR'`` from Python."""
    return named(f"--out {out}", "out", out)


def _force() -> str:
    """``--force`` on the command line, ``force=True`` from Python."""
    return spell("--force", "force=True")


def check_output(
    out: Path, force: bool, *, inputs: Sequence[Path] = (), allow_inside: bool = False
) -> None:
    """Fail early if ``out`` cannot be the output: it is or holds one of ``inputs`` (or, unless
    ``allow_inside``, lies inside an input directory, which copies of it would then carry), it
    is a file, or it exists without ``force``.

    Without ``force`` an ``out`` that is the current directory or one above it is refused too;
    with ``force`` that is left to the writer (:func:`atomic_dir` refuses to replace it), since
    a caller may keep an existing ``out`` (``hm3 search --resume``).
    """
    out = Path(out)
    resolved, where = out.resolve(), _named(out)
    for path in inputs:
        p = Path(path).resolve()
        if resolved == p or resolved in p.parents:
            raise Hm3Error(f"{where}: would overwrite the input {path}; choose another path")
        if not allow_inside and p in resolved.parents and p.is_dir():
            raise Hm3Error(
                f"{where}: lies inside the input {path}, which would then hold it; choose a "
                "path outside it"
            )
    if out.exists() and not out.is_dir():
        raise Hm3Error(f"{where}: exists and is not a directory; remove it or choose another path")
    _check_parents(out)
    if not force:
        check_not_cwd(out)
    if out.exists() and not force:
        raise Hm3Error(f"{where}: already exists; choose another path or pass {_force()}")


def _check_parents(out: Path) -> None:
    """Refuse an ``out`` below a file (``afile/sub``), which mkdir would call only "exists"."""
    blocker = next((p for p in Path(out).parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise Hm3Error(f"{_named(out)}: cannot create it: {blocker} is a file, not a folder; "
                       "choose another path")  # fmt: skip


def check_not_cwd(out: Path) -> None:
    """Refuse an ``out`` that is the current directory or one above it (it cannot be replaced)."""
    here = Path.cwd().resolve()
    if Path(out).resolve() in (here, *here.parents):
        raise Hm3Error(
            f"{_named(out)}: is the current directory or holds it, which cannot be "
            "replaced; choose another path"
        )


@contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block finishes without error.

    Args:
        out: the final directory; never the current directory or one above it.
        force: replace ``out`` if it exists (only after the new content is complete).

    Yields:
        The temporary directory to write into (same filesystem as ``out``). It has the mode a
        plain ``mkdir`` gives (``0o777 & ~umask``), which the rename keeps: others can read the
        output as they could any directory the user makes.

    Raises:
        Hm3Error: ``out`` is refused by :func:`check_output`, is the current directory, or
            cannot be created. On any failure the temporary directories, and the parents of
            ``out`` that it made and that are still empty, are removed, and an existing ``out``
            is left as it was.
    """
    out = Path(out)
    check_output(out, force)
    check_not_cwd(out)
    with sibling_scratch(out, f".{out.name}.tmp-") as tmp:
        yield tmp
        _swap(tmp, out, force)


@contextmanager
def sibling_scratch(out: Path, prefix: str) -> Iterator[Path]:
    """A new folder ``prefix<random>`` beside ``out`` for the block, then removed; if the block
    fails, so are the parents of ``out`` made for it (while still empty). Made and removed with
    Ctrl-C held: an interrupt just after the ``mkdir``, or in the removal, would leave it.

    Raises:
        Hm3Error: it cannot be created (:func:`_sibling_dir`).
    """
    tmp, missing, done = None, [], False
    try:
        with held():
            tmp, missing = _sibling_dir(out, prefix)
        yield tmp
        done = True
    finally:
        remove_tree(tmp)
        if not done:
            remove_empty(missing)


def write_file(path: Path, data: bytes) -> None:
    """Write the file ``path`` whole or not at all: an error or Ctrl-C leaves no temporary."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_tree(path: Path | None) -> None:
    """Remove a directory that hm3 made (none: nothing), with Ctrl-C held: an interrupt would
    leave it half removed, a hidden folder holding part of a model."""
    if path is not None:
        with held():
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A new folder in the system's temporary directory for the block, then removed; unlike
    :class:`tempfile.TemporaryDirectory`, a Ctrl-C just after it is made or while it is removed
    cannot leave it behind."""
    tmp = None
    try:
        with held():
            tmp = Path(tempfile.mkdtemp(prefix=prefix))
        yield tmp
    finally:
        remove_tree(tmp)


def _sibling_dir(out: Path, prefix: str) -> tuple[Path, list[Path]]:
    """Make ``out``'s parent folders and a new directory ``prefix<random>`` beside ``out``.

    Returns:
        The new directory, and the parents of ``out`` made for it (nearest first), which
        :func:`sibling_scratch` removes when its block fails.

    Raises:
        Hm3Error: either cannot be created (a parent is a file, no permission ...); what was
            made is removed.
    """
    out = Path(out)
    missing = missing_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return _fresh_dir(out.parent, prefix), missing
    except OSError as exc:
        remove_empty(missing)
        _check_parents(out)  # mkdir says only "File exists"
        raise Hm3Error(
            f"{_named(out)}: cannot create it ({exc.strerror or type(exc).__name__}); check the "
            "path"
        ) from None


def missing_parents(path: Path) -> list[Path]:
    """The parent directories of ``path`` that do not exist yet, nearest first."""
    missing = []
    for parent in Path(path).parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def remove_empty(dirs: list[Path]) -> None:
    """Remove ``dirs`` (nearest first, as :func:`missing_parents` lists them) while they are
    empty: what a failed write made around its output, so that it leaves nothing behind."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty (something else was written there), or already gone
            return


def _swap(tmp: Path, out: Path, force: bool) -> None:
    """Rename ``tmp`` to ``out``, replacing an existing ``out`` only when ``force``."""
    if not out.exists():
        tmp.rename(out)
        return
    if not force:
        raise Hm3Error(f"{_named(out)}: appeared while writing; pass {_force()} to replace it")
    old = None
    try:
        with held():  # Ctrl-C between the two renames would delete both outputs
            old = _fresh_dir(out.parent, f".{out.name}.old-")
            out.rename(old / out.name)
            try:
                tmp.rename(out)
            except BaseException:
                (old / out.name).rename(out)  # put the old output back
                raise
    finally:
        remove_tree(old)


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
