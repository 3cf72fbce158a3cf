"""The demo's recipe: its case studies, its merges (Table 1's columns) and its originals.

What :mod:`hm3.demo.run` runs, and what the benchmarks reuse to rebuild the same merges:
:data:`CASES` (the paper's two case studies and the four-task merge), :data:`METHODS` and
:data:`EXTRA_METHODS` (the merges by name, with the fixed parameters the demo uses),
:class:`DemoOptions` (how a run is set up), :func:`merge_config` (one case and method as a
merge config on the zoo), and :func:`train_zoo` (the four fine-tuned originals, cached). It
runs no merge and evaluates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from hm3.defaults import DEFAULT_RIDGE
from hm3.demo.data.prepare import DemoData
from hm3.demo.data.spec import TASKS
from hm3.demo.sources.fetch import cache_root
from hm3.demo.train.classifier import TrainedClassifier, train_classifier
from hm3.demo.train.loop import TrainSettings
from hm3.errors import Hm3Error
from hm3.merging.config import MergeConfig
from hm3.options import RunOptions


@dataclass(frozen=True)
class CaseStudy:
    name: str
    title: str
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class MethodSpec:
    """One merge of a case study: a column of Table 1."""

    name: str
    method: str
    parameters: dict[str, float] = field(default_factory=dict)


CASES = (
    CaseStudy(
        "case1", "prompt attack + toxicity (paper case study 1)", ("prompt_attack", "toxicity")
    ),
    CaseStudy("case2", "spam + sentiment (paper case study 2)", ("spam", "sentiment")),
    CaseStudy("all4", "all four tasks", tuple(TASKS)),
)
# Fixed densities, chosen before looking at results: 0.5 is mergekit's customary TIES density;
# 0.3 is in the low-density range where the paper found its best DARE-TIES merges.
METHODS = (
    MethodSpec("soup", "linear"),
    MethodSpec("ties", "ties", {"density": 0.5}),
    MethodSpec("dare_ties", "dare_ties", {"density": 0.3}),
    MethodSpec("dare_ties_search", "dare_ties", {"density": 0.3}),
)
# The paper's fourth column: DARE-TIES whose density a search (Algorithm 3) chose on the
# validation splits (:mod:`hm3.demo.searched`), with few trials so that a cached run stays
# within 4 minutes on 2 CPU cores; `DemoOptions.search_trials` sets how many.
SEARCH = METHODS[-1]
SEARCH_TRIALS = 3
# Not in the paper, so not in the default table (which must also fit the cached run's
# 3 minutes): `hm3 demo --methods soup,ties,dare_ties,regmean,tsv` adds them. RegMean's Gram
# matrices are computed on each task's share of the alignment texts (100 per task); TSV-Merge
# runs at the paper's λ = 1.
EXTRA_METHODS = (MethodSpec("regmean", "regmean", {"alpha": 0.9}), MethodSpec("tsv", "tsv"))
# Fine-tuning epochs per task (default 1), chosen on the validation splits within the 10-minute
# budget: sentiment (3 classes, human ratings, a hard "neutral") reached macro-F1 0.53 after one
# epoch, 0.63 after two, 0.67 after three; the other tasks reach 0.86-0.98 after one.
EPOCHS = {"sentiment": 3}


# 16 texts per batch is the fastest on 2 CPU cores at the zoo's 64 tokens (less padding)
DEMO_RUN = RunOptions(batch_size=16, max_length=TrainSettings.max_length)


@dataclass(frozen=True)
class DemoOptions:
    """How to run the demo (``hm3 demo``'s options).

    ``quick`` uses the small data sizes (same code path, for CI); ``align`` adds an aligned
    column per method, fitted with ``ridge``; ``eval_limit`` evaluates a seeded sample of at
    most that many rows per dataset (``None``: every row); ``methods`` names the merges of
    Table 1 (:data:`METHODS`, and :data:`EXTRA_METHODS`); ``search_trials`` is the number of
    trials of ``dare_ties_search``; ``keep_models`` keeps the merged and
    aligned models in the report. ``run`` is how models run and the report is written: its
    ``max_length`` truncates texts when aligning and evaluating (the originals were fine-tuned
    on :attr:`TrainSettings.max_length` tokens, the default here: :data:`DEMO_RUN`).
    """

    seed: int = 0
    quick: bool = False
    align: bool = True
    ridge: float | str = DEFAULT_RIDGE  # or "auto"
    eval_limit: int | None = None
    keep_models: bool = False
    methods: tuple[str, ...] = tuple(m.name for m in METHODS)  # Table 1's columns, in order
    search_trials: int = SEARCH_TRIALS  # trials of the dare_ties_search column
    run: RunOptions = DEMO_RUN


def method_specs(names: tuple[str, ...]) -> tuple[MethodSpec, ...]:
    """The demo's merges by name; an unknown or repeated name is an error listing the valid."""
    known = {m.name: m for m in (*METHODS, *EXTRA_METHODS)}
    bad = [n for n in names if n not in known or names.count(n) > 1]
    if bad or not names:
        problem = f"unknown or repeated: {bad[0]}" if bad else "empty"
        raise Hm3Error(
            f"--methods {','.join(names)}: {problem}; give a comma list of {', '.join(known)}"
        )
    return tuple(known[n] for n in names)


def merge_config(
    case: CaseStudy,
    spec: MethodSpec,
    base: Path,
    zoo: dict[str, TrainedClassifier],
    seed: int,
    texts: dict[str, Path] | None = None,
) -> MergeConfig:
    """The merge recipe of one case study and method, on the zoo's originals.

    ``texts`` (task → unlabeled texts of its domain) is what ``regmean`` computes each model's
    Gram matrices on, at the zoo's training length.
    """
    models = [{"model": str(zoo[t].path), "name": t} for t in case.tasks]
    doc: dict = {"base_model": str(base), "merge_method": spec.method, "seed": seed}
    if spec.method == "regmean":
        if texts is None:
            raise Hm3Error(f"demo {case.name}/{spec.name}: regmean needs texts for every task")
        models = [{**m, "texts": str(texts[m["name"]])} for m in models]
        doc["regmean"] = {"max_length": TrainSettings.max_length}
    return MergeConfig.from_dict(
        {**doc, "parameters": dict(spec.parameters), "models": models},
        source=f"demo {case.name}/{spec.name}",
    )


def train_zoo(
    base: Path,
    data: DemoData,
    cache_dir: Path | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, TrainedClassifier]:
    """Fine-tune (or reuse from ``<cache>/zoo``) the demo's original of every task.

    Args:
        base: the base encoder (:func:`hm3.demo.sources.fetch.base_model_dir`).
        data: the splits (:func:`hm3.demo.data.prepare.prepare_data`).
        cache_dir: the cache root (default: ``HM3_CACHE`` or ``~/.cache/hm3``).
        seed: the fine-tuning seed.
        progress: show progress bars.

    Returns:
        Task name → its fine-tuned classifier, in :data:`TASKS` order.
    """
    root = cache_root(cache_dir) / "zoo"
    settings = TrainSettings(seed=seed)
    return {
        name: train_classifier(
            base,
            name,
            spec.labels,
            data.tasks[name].train,
            data.tasks[name].validation,
            root,
            replace(settings, epochs=EPOCHS.get(name, settings.epochs)),
            progress=progress,
        )
        for name, spec in TASKS.items()
    }
