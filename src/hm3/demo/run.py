"""``hm3 demo``: the paper's two case studies and a four-task merge, on real classifiers, offline.

:func:`run_demo` runs the whole pipeline and writes one report directory:

1. fetch the pinned base encoder and data (:mod:`hm3.demo.sources`), cut the seeded splits
   and suites (:mod:`hm3.demo.data`);
2. fine-tune the four originals from the base (:mod:`hm3.demo.train`; cached by a hash of data
   and settings, so a second run trains nothing);
3. merge each case study — ``prompt_attack + toxicity`` (paper case study 1), ``spam +
   sentiment`` (case study 2) and all four — with each of :data:`METHODS` (:mod:`hm3.recipe`),
   and align every merge's heads on the unlabeled texts (:mod:`hm3.alignment`);
4. evaluate every merge against the originals on the case's tasks of the paper-style suite
   (:mod:`hm3.evaluation`), and each original on its own test set;
5. write Table 1 and the evaluation reports (:mod:`hm3.demo.summary`).

The report directory appears complete or not at all. Merged models live in it only with
``keep_models``. This module decides the recipe; the work is done by the library.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from hm3.alignment import DEFAULT_RIDGE, align
from hm3.config import MergeConfig
from hm3.demo.data import TASKS, DemoData, prepare_data
from hm3.demo.sources import base_model_dir, cache_root
from hm3.demo.summary import CaseResult, DemoResult, OriginalInfo, write_summary
from hm3.demo.train import TrainedClassifier, TrainSettings, train_classifier
from hm3.errors import Hm3Error
from hm3.evaluation import evaluate
from hm3.output import atomic_dir, check_output
from hm3.recipe import merge
from hm3.report import write_report
from hm3.suite import load_suite


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
)
ALIGNED = "+align"


@dataclass(frozen=True)
class DemoOptions:
    """How to run the demo.

    ``quick`` uses the small data sizes (same code path, for CI); ``align`` adds an aligned
    column per method; ``max_length`` truncates texts when aligning and evaluating (the
    originals were fine-tuned on :attr:`TrainSettings.max_length` tokens, the default here).
    """

    seed: int = 0
    quick: bool = False
    align: bool = True
    ridge: float = DEFAULT_RIDGE
    batch_size: int = 64
    max_length: int = TrainSettings.max_length
    device: str | None = None
    keep_models: bool = False


def run_demo(
    out: str | Path,
    *,
    cache_dir: Path | None = None,
    options: DemoOptions = DemoOptions(),
    force: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> DemoResult:
    """Build (or reuse) the zoo, merge, align, evaluate, and write the report to ``out``.

    Args:
        out: the report directory; must not exist unless ``force``.
        cache_dir: where sources, data and the zoo are kept (default: ``HM3_CACHE`` or
            ``~/.cache/hm3``).
        options: see :class:`DemoOptions`.
        force: replace an existing ``out`` once the new report is complete.
        progress: show progress bars.
        console: where step messages go (default: stderr).

    Returns:
        A :class:`~hm3.demo.summary.DemoResult` (Table 1, originals, timings).
    """
    started = time.perf_counter()
    out = Path(out)
    check_output(out, force)
    say = _Steps(console or Console(stderr=True), progress)
    timings: dict[str, float] = {}
    with say.step("fetching the base model and data", timings, "data"):
        base = base_model_dir(cache_dir)
        data = prepare_data(cache_dir, seed=options.seed, quick=options.quick)
    with say.step("fine-tuning the four originals (cached after the first run)", timings, "train"):
        zoo = _train_zoo(base, data, cache_root(cache_dir) / "zoo", options, progress)
    with atomic_dir(out, force) as tmp:
        with say.step("scoring each original on its own test set", timings, "evaluate"):
            originals = _score_originals(data, zoo, options, tmp / "originals", progress)
        cases = [_run_case(case, base, data, zoo, options, tmp, say, timings) for case in CASES]
        if not options.keep_models:
            shutil.rmtree(tmp / "models", ignore_errors=True)
        result = DemoResult(
            path=out,
            quick=options.quick,
            seed=options.seed,
            data_root=str(data.root),
            methods=tuple(m.name for m in METHODS),
            aligned=options.align,
            ridge=options.ridge,
            originals=originals,
            cases=tuple(cases),
            timings={k: round(v, 1) for k, v in timings.items()},
            seconds=round(time.perf_counter() - started, 1),
        )
        write_summary(result, tmp, data)
    return result


def _train_zoo(
    base: Path, data: DemoData, root: Path, options: DemoOptions, progress: bool
) -> dict[str, TrainedClassifier]:
    settings = TrainSettings(seed=options.seed)
    return {
        name: train_classifier(
            base,
            name,
            spec.labels,
            data.tasks[name].train,
            data.tasks[name].validation,
            root,
            settings,
            progress=progress,
        )
        for name, spec in TASKS.items()
    }


def _score_originals(
    data: DemoData,
    zoo: dict[str, TrainedClassifier],
    options: DemoOptions,
    out: Path,
    progress: bool,
) -> tuple[OriginalInfo, ...]:
    result = evaluate(
        load_suite(data.test_suite),
        {},
        originals={n: c.path for n, c in zoo.items()},
        batch_size=options.batch_size,
        max_length=options.max_length,
        device=options.device,
        progress=progress,
    )
    write_report(result, out)
    scores = result.model("original")
    return tuple(
        OriginalInfo(
            task=name,
            labels=clf.labels,
            path=str(clf.path),
            validation_f1=clf.validation_macro_f1,
            test_f1=scores.task(name).f1,
            train_seconds=clf.train_seconds,
            reused=clf.reused,
        )
        for name, clf in zoo.items()
    )


def _run_case(
    case: CaseStudy,
    base: Path,
    data: DemoData,
    zoo: dict[str, TrainedClassifier],
    options: DemoOptions,
    tmp: Path,
    say: _Steps,
    timings: dict[str, float],
) -> CaseResult:
    models: dict[str, Path] = {}
    folder = tmp / "models" / case.name
    with say.step(f"{case.name}: merging {' + '.join(case.tasks)}", timings, "merge"):
        for spec in METHODS:
            config = _merge_config(case, spec, base, zoo, options.seed)
            device = "cuda" if (options.device or "").startswith("cuda") else "cpu"
            merge(config, folder / spec.name, device=device, progress=say.progress)
            models[spec.name] = folder / spec.name
    if options.align:
        with say.step(
            f"{case.name}: aligning the heads on {data.unlabeled.name}", timings, "align"
        ):
            for spec in METHODS:
                aligned = folder / f"{spec.name}{ALIGNED}"
                align(
                    models[spec.name],
                    data.unlabeled,
                    aligned,
                    ridge=options.ridge,
                    batch_size=options.batch_size,
                    max_length=options.max_length,
                    device=options.device,
                    progress=say.progress,
                )
                models[f"{spec.name}{ALIGNED}"] = aligned
    with say.step(f"{case.name}: evaluating against the originals", timings, "evaluate"):
        result = evaluate(
            load_suite(data.suite).restricted(case.tasks),
            models,
            originals={t: zoo[t].path for t in case.tasks},
            batch_size=options.batch_size,
            max_length=options.max_length,
            device=options.device,
            progress=say.progress,
        )
        write_report(result, tmp / case.name)
    average = {m.name: m.average_f1 for m in result.models}
    return CaseResult(case.name, case.title, case.tasks, average, per_task=_per_task(result))


def _per_task(result) -> dict[str, dict[str, float]]:
    return {m.name: {t.task: t.f1 for t in m.tasks} for m in result.models}


def _merge_config(
    case: CaseStudy, spec: MethodSpec, base: Path, zoo: dict[str, TrainedClassifier], seed: int
) -> MergeConfig:
    return MergeConfig.from_dict(
        {
            "base_model": str(base),
            "merge_method": spec.method,
            "parameters": dict(spec.parameters),
            "models": [{"model": str(zoo[t].path), "name": t} for t in case.tasks],
            "seed": seed,
        },
        source=f"demo {case.name}/{spec.name}",
    )


@dataclass
class _Steps:
    """Step messages on the console, with each step's time added to ``timings``."""

    console: Console
    progress: bool

    @contextmanager
    def step(self, what: str, timings: dict[str, float], key: str) -> Iterator[None]:
        self.console.print(f"[bold]·[/] {what}", highlight=False)
        started = time.perf_counter()
        try:
            yield
        except Hm3Error as exc:
            raise Hm3Error(f"demo step {what!r}: {exc}") from None
        finally:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - started
