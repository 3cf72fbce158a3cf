"""Near-copies: texts that share most of their wording, whatever their first words.

:func:`~hm3.demo.data.text.group_key` groups texts that *begin* alike (obfuscated variants of
one prompt). E-mails of one spam run, replies quoting one thread, or a review posted twice with
a new first line differ at the start and slip through it; left in different splits, a model is
tested on a text it was trained on. Here two texts are near-copies when the Jaccard similarity
of their word 5-grams (:func:`shingles`) is at least :data:`NEAR`.

- :class:`NearCopies` answers "how similar is this text to any of those?" (the held-out suite
  of ``benchmarks/heldout_suite.py`` uses it to reject rows close to a seen text);
- :func:`near_groups` joins a task's rows into groups that are closed under near-copying
  (union-find), which :func:`~hm3.demo.data.split.split_rows` deals to one split each.

Candidates are found through an index of the 5-grams that occur in at most :data:`COMMON`
texts (boilerplate, such as a mailing list's footer, would make every e-mail a candidate); a
candidate is scored when it shares at least a fifth of the text's indexed 5-grams (a text at
:data:`NEAR` or above shares more, unless much of what the two share is boilerplate, which
does not make them near-copies). On the demo's spam e-mails the filter misses 4 of 4,129 pairs
at :data:`NEAR` or above, each joined only by a mailing list's footer.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence

SHINGLE = 5  # words per n-gram
NEAR = 0.3  # Jaccard similarity of word 5-grams from which two texts are near-copies
COMMON = 200  # 5-grams in more texts than this do not find candidates (boilerplate)

_WORD = re.compile(r"\w+")


def shingles(text: str) -> frozenset[str]:
    """The text's word 5-grams, lower-cased (the whole text if it has fewer words)."""
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return frozenset({" ".join(words)})
    return frozenset(" ".join(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1))


class NearCopies:
    """The largest Jaccard similarity of a text's word 5-grams to any of ``texts``' 5-grams."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.sets = [shingles(t) for t in texts]
        index: dict[str, list[int]] = defaultdict(list)
        for i, grams in enumerate(self.sets):
            for gram in grams:
                index[gram].append(i)
        self.index = {g: ids for g, ids in index.items() if len(ids) <= COMMON}

    def candidates(self, grams: frozenset[str]) -> list[tuple[int, float]]:
        """``(i, similarity)`` of every indexed text that shares enough 5-grams with ``grams``."""
        shared = Counter(i for g in grams for i in self.index.get(g, ()))
        floor = max(1, sum(g in self.index for g in grams) // 5)
        return [
            (i, len(grams & self.sets[i]) / len(grams | self.sets[i]))
            for i, n in shared.items()
            if n >= floor
        ]

    def similarity(self, text: str) -> float:
        return max((s for _, s in self.candidates(shingles(text))), default=0.0)


def near_groups(texts: Sequence[str], keys: Sequence[str] = ()) -> list[int]:
    """A group id per text: texts that are near-copies, directly or through a chain of them,
    or that share a key of ``keys`` (optional, one per text), get the same id.

    Ids are the smallest index in each group, so the result depends only on the texts' order.
    """
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        join(i, first.setdefault(key, i))
    near = NearCopies(texts)
    for i, grams in enumerate(near.sets):
        for j, similarity in near.candidates(grams):
            if j != i and similarity >= NEAR:
                join(i, j)
    return [root(i) for i in range(len(texts))]
