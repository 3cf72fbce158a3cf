"""Unpacking the demo's downloads: wheels and tar.gz archives, refusing names that escape."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from hm3.demo.sources.archives import extract
from hm3.errors import Hm3Error


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("make", [_zip, _tar], ids=["zip", "tar.gz"])
def test_extract_writes_every_member_byte_for_byte(tmp_path, make):
    members = {"pkg/data/a.csv": b"x,y\n1,2\n", "pkg/README": b"hello", "top.txt": b""}
    artifact = make(tmp_path / "artifact", members)
    dest = tmp_path / "out"
    dest.mkdir()
    extract(artifact, dest, "unpacking")
    assert _files(dest) == members


@pytest.mark.parametrize("make", [_zip, _tar], ids=["zip", "tar.gz"])
@pytest.mark.parametrize("bad", ["../escape.txt", "pkg/../../escape.txt", "/abs/escape.txt"])
def test_extract_refuses_a_name_outside_the_target_and_writes_nothing(tmp_path, make, bad):
    artifact = make(tmp_path / "artifact", {"pkg/ok.txt": b"ok", bad: b"evil"})
    dest = tmp_path / "deep" / "out"
    dest.mkdir(parents=True)
    with pytest.raises(Hm3Error, match="would unpack outside") as err:
        extract(artifact, dest, "unpacking")
    assert repr(bad) in str(err.value) and "delete the file" in str(err.value)
    assert list(dest.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "deep" / "escape.txt").exists()


def test_extract_refuses_a_drive_letter(tmp_path):
    artifact = _zip(tmp_path / "artifact", {"C:/windows/escape.txt": b"evil"})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(Hm3Error, match="would unpack outside"):
        extract(artifact, dest, "unpacking")


def test_extract_skips_links_in_a_tar(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    artifact = _tar(tmp_path / "artifact", {"pkg/ok.txt": b"ok"}, links={"pkg/link": str(outside)})
    dest = tmp_path / "out"
    dest.mkdir()
    extract(artifact, dest, "unpacking")
    assert _files(dest) == {"pkg/ok.txt": b"ok"}
    assert not (dest / "pkg" / "link").exists() and not (dest / "pkg" / "link").is_symlink()
