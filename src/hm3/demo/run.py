"""``hm3 demo``: the paper's two case studies and a four-task merge, on real classifiers, offline.

:func:`run_demo` runs the whole pipeline and writes one report directory:

1. fetch the pinned base encoder and data (:mod:`hm3.demo.sources.fetch`), cut the seeded splits
   and suites (:mod:`hm3.demo.data.prepare`);
2. fine-tune the four originals from the base (:mod:`hm3.demo.train.classifier`; cached by a
   hash of data and settings, so a second run trains nothing);
3. merge each case study — ``prompt_attack + toxicity`` (paper case study 1), ``spam +
   sentiment`` (case study 2) and all four — with each of Table 1's merges
   (:mod:`hm3.demo.cases`) through :mod:`hm3.recipe`, and align every merge's heads on the
   unlabeled texts (``hm3 align``'s fit);
4. evaluate every merge and its aligned twin against the originals on the case's tasks of the
   paper-style suite (:mod:`hm3.evaluation.run`), and each original on its own test set;
5. write Table 1 and the evaluation reports (:mod:`hm3.demo.summary`).

On 2 CPU cores forward passes are the whole cost, so the originals' logits and each merge's
body features are computed once per text and shared (:mod:`hm3.demo.memo`, tested equal
to running ``hm3 align`` and ``hm3 evaluate`` on directories). The report directory appears
complete or not at all. Merged models (and aligned ones, written by ``hm3 align`` itself)
live in it only with ``keep_models``. This module runs the steps; :mod:`hm3.demo.cases`
says what is merged, and the library does the work.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from hm3.alignment.api import DEFAULT_RIDGE, align
from hm3.demo.cases import (
    CASES,
    METHODS,
    CaseStudy,
    MethodSpec,
    merge_config,
    method_specs,
    train_zoo,
)
from hm3.demo.data.prepare import TASKS, DemoData, prepare_data
from hm3.demo.data.suite import write_jsonl
from hm3.demo.memo import MemoLogits, SharedBody, fit_alignment
from hm3.demo.sources.fetch import base_model_dir
from hm3.demo.summary import CaseResult, DemoResult, OriginalInfo, write_summary
from hm3.demo.train.classifier import TrainedClassifier, TrainSettings
from hm3.errors import Hm3Error
from hm3.evaluation.report import write_report
from hm3.evaluation.results import EvaluationResult
from hm3.evaluation.run import ORIGINAL, evaluate
from hm3.evaluation.suite import Suite, load_suite
from hm3.io.atomic import atomic_dir, check_output
from hm3.io.texts import TextCount, iter_text_batches, open_texts
from hm3.model.classifier import Predictor, load
from hm3.recipe import merge

log = logging.getLogger("hm3")

ALIGNED = "+align"  # the suffix of an aligned merge's column in Table 1


@dataclass(frozen=True)
class DemoOptions:
    """How to run the demo.

    ``quick`` uses the small data sizes (same code path, for CI); ``align`` adds an aligned
    column per method; ``max_length`` truncates texts when aligning and evaluating (the
    originals were fine-tuned on :attr:`TrainSettings.max_length` tokens, the default here);
    ``eval_limit`` evaluates a seeded sample of at most that many rows per dataset (``None``:
    every row); ``methods`` names the merges of Table 1 (:data:`METHODS`, and
    :data:`EXTRA_METHODS`).
    """

    seed: int = 0
    quick: bool = False
    align: bool = True
    ridge: float | str = DEFAULT_RIDGE  # or "auto"
    batch_size: int = 16  # fastest on 2 CPU cores at 64 tokens (less padding)
    max_length: int = TrainSettings.max_length
    eval_limit: int | None = None
    device: str | None = None
    keep_models: bool = False
    methods: tuple[str, ...] = tuple(m.name for m in METHODS)  # Table 1's columns, in order


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
    specs = method_specs(options.methods)
    say = _Steps(console or Console(stderr=True), progress)
    with say.step("fetching the base model and data", "data"):
        base = base_model_dir(cache_dir)
        data = prepare_data(cache_dir, seed=options.seed, quick=options.quick)
    with say.step("fine-tuning the four originals (cached after the first run)", "train"):
        zoo = train_zoo(base, data, cache_dir, seed=options.seed, progress=progress)
    with atomic_dir(out, force) as tmp:
        runners = _originals(zoo, options)
        ctx = _Context(base, data, zoo, runners, _texts_by_task(data), options, tmp, say, specs)
        with say.step("scoring each original on its own test set", "originals"):
            originals = _score_originals(ctx)
        _keep(runners)
        cases = []
        for case in CASES:
            cases.append(_run_case(ctx, case))
            _keep(runners)
        if not options.keep_models:
            shutil.rmtree(tmp / "models", ignore_errors=True)
        result = DemoResult(
            path=out,
            quick=options.quick,
            seed=options.seed,
            data_root=str(data.root),
            methods=tuple(m.name for m in specs),
            aligned=options.align,
            ridge=options.ridge,
            originals=originals,
            cases=tuple(cases),
            timings={k: round(v, 1) for k, v in say.timings.items()},
            seconds=round(time.perf_counter() - started, 1),
        )
        write_summary(result, tmp, data)
    return result


@dataclass(frozen=True)
class _Context:
    """What every step of a run needs."""

    base: Path
    data: DemoData
    zoo: dict[str, TrainedClassifier]
    originals: dict[str, MemoLogits]  # task → its original, logits computed once per text
    unlabeled: dict[str, tuple[str, ...]]  # task → its alignment texts (from its train split)
    options: DemoOptions
    tmp: Path  # the report directory being written
    say: _Steps
    specs: tuple[MethodSpec, ...]  # Table 1's merges

    def evaluate(
        self, suite: Suite, models: dict[str, Predictor], tasks: Sequence[str]
    ) -> EvaluationResult:
        return evaluate(
            suite,
            models,
            originals={t: self.originals[t] for t in tasks},
            batch_size=self.options.batch_size,
            progress=self.say.progress,
        )


def _originals(zoo: dict[str, TrainedClassifier], options: DemoOptions) -> dict[str, MemoLogits]:
    """Each original, with its logits kept beside it in the zoo (they never change)."""
    return {
        name: MemoLogits(
            load(clf.path, device=options.device, max_length=options.max_length),
            clf.path.with_name(f"{clf.path.name}.logits-{options.max_length}.npz"),
        )
        for name, clf in zoo.items()
    }


def _keep(originals: dict[str, MemoLogits]) -> None:
    """Save the originals' logits to the zoo; a read-only cache only costs time next run."""
    for memo in originals.values():
        try:
            memo.save()
        except OSError as exc:
            log.warning("%s: cannot keep the original's logits (%s)", memo.store, exc)


def _texts_by_task(data: DemoData) -> dict[str, tuple[str, ...]]:
    """The unlabeled texts, by the task whose train split each came from, in file order.

    A case is aligned on its own tasks' texts only: covering the merged tasks' domains is what
    matters, other domains neither help nor hurt (benchmarks/RESULTS.md), and fewer texts cost
    fewer forward passes.
    """
    texts = _texts_of(data.unlabeled)
    out = {}
    for task in TASKS:
        train = set(_texts_of(data.tasks[task].train))
        out[task] = tuple(t for t in texts if t in train)
    if set(texts) - {t for own in out.values() for t in own}:
        raise Hm3Error(
            f"{data.unlabeled}: texts that are in no task's train split; the demo data is "
            f"stale or edited: delete {data.root} and run again"
        )
    return out


def _texts_of(path: Path) -> list[str]:
    batches = iter_text_batches(open_texts(path), 1024, None, TextCount())
    return [t for batch in batches for t in batch]


def _score_originals(ctx: _Context) -> tuple[OriginalInfo, ...]:
    """Each original on its own whole test split (no row limit: these are the reference)."""
    suite = load_suite(ctx.data.test_suite)
    result = ctx.evaluate(suite, {}, list(ctx.zoo))
    write_report(result, ctx.tmp / "originals")
    scores = result.model(ORIGINAL)
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
        for name, clf in ctx.zoo.items()
    )


def _run_case(ctx: _Context, case: CaseStudy) -> CaseResult:
    """Merge one case study every way, align each merge, evaluate, write its report."""
    folder = ctx.tmp / "models" / case.name
    with ctx.say.step(f"{case.name}: merging {' + '.join(case.tasks)}", "merge"):
        merged = _merge_case(ctx, case, folder)
    texts = tuple(t for task in case.tasks for t in ctx.unlabeled[task])
    step = "aligning the heads" if ctx.options.align else "loading the merges"
    where = f"{len(texts)} texts of {ctx.data.unlabeled.name}"
    with ctx.say.step(f"{case.name}: {step} on {where} (the case's tasks)", "align"):
        models = _predictors(ctx, merged, texts)
    with ctx.say.step(f"{case.name}: evaluating against the originals", "evaluate"):
        suite = load_suite(ctx.data.suite).restricted(case.tasks)
        result = ctx.evaluate(_limited(suite, ctx.options), models, case.tasks)
        write_report(result, ctx.tmp / case.name)
    if ctx.options.keep_models and ctx.options.align:
        with ctx.say.step(f"{case.name}: writing the aligned models", "align"):
            _write_aligned(ctx, merged, texts, folder / "unlabeled.jsonl")
    average = {m.name: m.average_f1 for m in result.models}
    per_task = {m.name: {t.task: t.f1 for t in m.tasks} for m in result.models}
    return CaseResult(case.name, case.title, case.tasks, average, per_task)


def _merge_case(ctx: _Context, case: CaseStudy, folder: Path) -> dict[str, Path]:
    """Merge the case's originals with every method; method name → merged directory."""
    device = "cuda" if (ctx.options.device or "").startswith("cuda") else "cpu"
    texts = None
    if any(spec.method == "regmean" for spec in ctx.specs):
        texts = {t: folder / f"regmean-{t}.jsonl" for t in case.tasks}
        folder.mkdir(parents=True, exist_ok=True)
        for task, path in texts.items():
            write_jsonl(path, ({"text": t} for t in ctx.unlabeled[task]))
    for spec in ctx.specs:
        config = merge_config(case, spec, ctx.base, ctx.zoo, ctx.options.seed, texts)
        merge(config, folder / spec.name, device=device, progress=ctx.say.progress)
    return {spec.name: folder / spec.name for spec in ctx.specs}


def _predictors(
    ctx: _Context, merged: dict[str, Path], texts: tuple[str, ...]
) -> dict[str, Predictor]:
    """Every merge, and (when aligning) its aligned twin on the same body, fit on ``texts``."""
    opts = ctx.options
    models: dict[str, Predictor] = {}
    for name, path in merged.items():
        body = SharedBody(load(path, device=opts.device, max_length=opts.max_length))
        models[name] = body.head()
        if opts.align:
            aligned = fit_alignment(body, ctx.originals, texts, opts.ridge, opts.batch_size)
            models[f"{name}{ALIGNED}"] = aligned
    return models


def _write_aligned(
    ctx: _Context, merged: dict[str, Path], texts: tuple[str, ...], file: Path
) -> None:
    """The aligned models as directories, written by ``hm3 align`` itself on ``texts``."""
    opts = ctx.options
    write_jsonl(file, ({"text": t} for t in texts))
    for name, path in merged.items():
        align(
            path,
            file,
            path.with_name(f"{name}{ALIGNED}"),
            ridge=opts.ridge,
            batch_size=opts.batch_size,
            max_length=opts.max_length,
            device=opts.device,
            progress=ctx.say.progress,
        )


def _limited(suite: Suite, options: DemoOptions) -> Suite:
    if options.eval_limit is None:
        return suite
    return suite.model_copy(update={"limit": options.eval_limit})


@dataclass
class _Steps:
    """Step messages on the console; each step's time is added to ``timings[key]``."""

    console: Console
    progress: bool
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, what: str, key: str) -> Iterator[None]:
        self.console.print(f"[bold]·[/] {what}", highlight=False)
        started = time.perf_counter()
        try:
            yield
        except Hm3Error as exc:
            raise Hm3Error(f"demo step {what!r}: {exc}") from None
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - started
