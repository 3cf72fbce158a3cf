"""Unpack a downloaded archive (a wheel or a tar.gz) safely into a directory.

Every member name is checked before anything is written: an absolute name, a drive letter or a
``..`` part would land outside the target directory, and refuses the whole archive. Of a tar,
only regular files and directories are unpacked (links and devices are skipped), and files are
copied byte for byte, so no mode, owner or link from the archive reaches the cache. This module
does not download, verify checksums or publish the result (:mod:`hm3.demo.sources.fetch` does).
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from rich.progress import Progress

from hm3.errors import Hm3Error


def extract(
    artifact: Path, dest: Path, label: str, display: Callable[[], Progress] | None = None
) -> None:
    """Unpack a zip (wheel) or a tar archive into ``dest``, checking every name first.

    Args:
        artifact: the archive.
        dest: an existing directory to unpack into.
        label: the progress bar's text.
        display: makes the progress display (default: none shown).

    Raises:
        Hm3Error: a member would land outside ``dest`` (nothing is unpacked then).
    """
    bars = display or _silent
    if zipfile.is_zipfile(artifact):
        with zipfile.ZipFile(artifact) as archive:
            members = archive.infolist()
            check_members((m.filename for m in members), artifact)
            with bars() as progress:
                bar = progress.add_task(label, total=len(members))
                for member in members:
                    archive.extract(member, dest)
                    progress.advance(bar)
        return
    with tarfile.open(artifact, "r:*") as archive:
        members = [m for m in archive.getmembers() if m.isfile() or m.isdir()]
        check_members((m.name for m in members), artifact)
        with bars() as progress:
            bar = progress.add_task(label, total=len(members))
            for member in members:
                _extract_tar_member(archive, member, dest)
                progress.advance(bar)


def _extract_tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    path = dest / member.name
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with archive.extractfile(member) as src, open(path, "wb") as out:  # type: ignore[union-attr]
        shutil.copyfileobj(src, out)


def check_members(names: Iterable[str], artifact: Path) -> None:
    """Refuse an absolute name, a drive letter or a ``..`` part (a "zip slip")."""
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise Hm3Error(
                f"{artifact}: member {name!r} would unpack outside the cache; expected"
                f" relative paths; delete the file and run again"
            )


def _silent() -> Progress:
    return Progress(disable=True)
