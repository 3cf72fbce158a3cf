"""Deduplicate a task's rows and cut seeded, stratified, leak-free train/validation/test splits.

- :func:`dedupe` cleans every text (:func:`~hm3.demo.data.text.clean`), drops empty ones and
  exact duplicates (case-folded); a text that occurs under two labels is dropped everywhere.
- :func:`split_rows` splits each label on its own (stratified) and moves whole near-duplicate
  groups, so obfuscated variants of one prompt (same :func:`~hm3.demo.data.text.group_key`)
  and rewordings of one text (:func:`~hm3.demo.data.near.near_groups`) never straddle train
  and test; a group that spans two labels is dropped. A group dealt to validation or test
  gives it at most :data:`EVAL_GROUP_CAP` rows (the rest go unused), so that one spam run of
  forty e-mails does not weigh forty times in a test score. Within a label the sources take
  turns (round robin over seeded shuffles), so a small source is used in full and shares
  every split in proportion instead of being crowded out by a large one.

All randomness comes from :func:`rng`, seeded from the caller's seed and a name: the same seed
gives the same rows in the same order on every machine. This module knows no task or source.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hm3.demo.data.near import near_groups
from hm3.demo.data.text import clean, dedupe_key, group_key

SPLITS = ("train", "validation", "test")
_FILL_ORDER = ("test", "validation", "train")  # ties go to the evaluation splits first
EVAL_GROUP_CAP = 5  # rows of one near-duplicate group in validation or test; the rest go unused


@dataclass(frozen=True)
class Row:
    """One labelled text and the source it came from."""

    text: str
    label: str
    source: str


def rng(seed: int, *names: str) -> random.Random:
    """A private generator for (seed, names), independent of Python's hash seed and version."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def dedupe(rows: Iterable[Row]) -> tuple[list[Row], dict[str, int]]:
    """Cleaned rows without empty texts or duplicates; counts of what was dropped."""
    kept: dict[str, Row] = {}
    labels: dict[str, set[str]] = defaultdict(set)
    empty = duplicates = 0
    for row in rows:
        text = clean(row.text)
        if not text:
            empty += 1
            continue
        key = dedupe_key(text)
        labels[key].add(row.label)
        if key in kept:
            duplicates += 1
        else:
            kept[key] = Row(text, row.label, row.source)
    conflicts = {k for k, v in labels.items() if len(v) > 1}
    out = [row for key, row in kept.items() if key not in conflicts]
    return out, {"empty": empty, "duplicates": duplicates, "label_conflicts": len(conflicts)}


def split_rows(
    rows: Sequence[Row], labels: Sequence[str], per_label: dict[str, int], seed: int, name: str
) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """Seeded stratified splits of deduplicated rows.

    Args:
        rows: deduplicated rows of one task (see :func:`dedupe`).
        labels: the task's labels; every row's label must be one of them.
        per_label: wanted rows per label and split, e.g. ``{"train": 600, "validation": 100,
            "test": 250}``; a label with fewer rows shrinks all three in proportion (about:
            the rows of a group cut at the cap or at a full split go unused).
        seed: the seed; ``name`` (the task) keeps tasks' draws independent.

    Returns:
        ``{split: rows}`` (each split shuffled) and counts: ``groups`` (near-duplicate groups of
        more than one row), ``group_label_conflicts`` (rows dropped because their group spans
        labels) and ``unused`` (rows left over once every split was full).
    """
    keys = [group_key(r.text) for r in rows]
    ids = near_groups([r.text for r in rows], keys)
    groups: dict[str, list[Row]] = defaultdict(list)
    for row, i in zip(rows, ids, strict=True):
        groups[keys[i]].append(row)  # named by its first row's key, which no other group has
    mixed = {k for k, g in groups.items() if len({r.label for r in g}) > 1}
    out: dict[str, list[Row]] = {s: [] for s in SPLITS}
    for label in labels:
        ordered = _round_robin(
            [(k, g) for k, g in groups.items() if k not in mixed and g[0].label == label],
            seed,
            name,
            label,
        )
        for split, chosen in _deal(ordered, per_label).items():
            out[split].extend(chosen)
    for split in SPLITS:
        rng(seed, name, "order", split).shuffle(out[split])
    dropped = sum(len(groups[k]) for k in mixed)
    stats = {
        "groups": sum(len(g) > 1 for g in groups.values()),
        "group_label_conflicts": dropped,
        "unused": len(rows) - dropped - sum(len(v) for v in out.values()),
    }
    return out, stats


def _round_robin(
    groups: list[tuple[str, list[Row]]], seed: int, name: str, label: str
) -> list[list[Row]]:
    """Groups ordered so that sources take turns, each source's groups in seeded order."""
    by_source: dict[str, list[list[Row]]] = defaultdict(list)
    for _, group in sorted(groups, key=lambda kg: kg[0]):
        by_source[group[0].source].append(group)
    queues = []
    for source in sorted(by_source):
        queue = by_source[source]
        rng(seed, name, label, source).shuffle(queue)
        queues.append(queue)
    ordered: list[list[Row]] = []
    for i in range(max((len(q) for q in queues), default=0)):
        ordered.extend(q[i] for q in queues if i < len(q))
    return ordered


def _deal(groups: list[list[Row]], per_label: dict[str, int]) -> dict[str, list[Row]]:
    """Deal groups to the split furthest below its target, trimming a group at a full split
    (and at :data:`EVAL_GROUP_CAP` rows in validation and test)."""
    targets = _targets(sum(len(g) for g in groups), per_label)
    chosen: dict[str, list[Row]] = {s: [] for s in SPLITS}
    for group in groups:
        open_ = [s for s in _FILL_ORDER if len(chosen[s]) < targets[s]]
        if not open_:
            break
        split = max(open_, key=lambda s: (targets[s] - len(chosen[s])) / targets[s])
        room = targets[split] - len(chosen[split])
        chosen[split].extend(group[: room if split == "train" else min(room, EVAL_GROUP_CAP)])
    return chosen


def _targets(available: int, per_label: dict[str, int]) -> dict[str, int]:
    want = {s: max(0, int(per_label.get(s, 0))) for s in SPLITS}
    total = sum(want.values())
    if total <= available:
        return want
    got = {s: want[s] * available // total for s in SPLITS}
    got["train"] += available - sum(got.values())
    return got
