"""The steps of a demo run after the zoo is ready: score the originals, then each case study.

:class:`Context` is what every step needs (the zoo, the data, the options, the report directory
being written); :class:`Steps` prints each step and times it. :func:`score_originals` evaluates
each original on its own test set; :func:`run_case` merges one case study with each of
Table 1's merges (through :mod:`hm3.recipe`), aligns every merge on the case's unlabeled texts
with the memoised predictors of :mod:`hm3.demo.memo`, evaluates them against the originals
(:mod:`hm3.evaluation.run`) and writes the case's report. Fetching, training and the summary
are :mod:`hm3.demo.run`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from hm3.alignment.api import align
from hm3.demo.cases import SEARCH, CaseStudy, DemoOptions, MethodSpec, merge_config
from hm3.demo.data.prepare import DemoData
from hm3.demo.data.suite import write_jsonl
from hm3.demo.memo import MemoLogits, SharedBody, fit_alignment
from hm3.demo.searched import searched_merge
from hm3.demo.summary import CaseResult, OriginalInfo
from hm3.demo.train.classifier import TrainedClassifier
from hm3.errors import Hm3Error
from hm3.evaluation.report import write_report
from hm3.evaluation.results import EvaluationResult
from hm3.evaluation.run import evaluate
from hm3.evaluation.scoring import ORIGINAL
from hm3.evaluation.suite import Suite, load_suite
from hm3.model.classifier import load
from hm3.model.predictor import Predictor
from hm3.options import RunOptions
from hm3.recipe import merge

ALIGNED = "+align"  # the suffix of an aligned merge's column in Table 1


@dataclass
class Steps:
    """Step messages on the console; each step's time is added to ``timings[key]``."""

    console: Console
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


@dataclass(frozen=True)
class Context:
    """What every step of a run needs."""

    base: Path
    data: DemoData
    zoo: dict[str, TrainedClassifier]
    originals: dict[str, MemoLogits]  # task → its original, logits computed once per text
    unlabeled: dict[str, tuple[str, ...]]  # task → its alignment texts (from its train split)
    options: DemoOptions
    tmp: Path  # the report directory being written
    say: Steps
    specs: tuple[MethodSpec, ...]  # Table 1's merges

    @property
    def run(self) -> RunOptions:
        """How models run inside the report: never replacing anything (it is new)."""
        return self.options.run.with_(force=False)

    def evaluate(
        self, suite: Suite, models: dict[str, Predictor], tasks: Sequence[str]
    ) -> EvaluationResult:
        originals = {t: self.originals[t] for t in tasks}
        return evaluate(suite, models, originals=originals, options=self.run)


def score_originals(ctx: Context) -> tuple[OriginalInfo, ...]:
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


def run_case(ctx: Context, case: CaseStudy) -> CaseResult:
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


def _merge_case(ctx: Context, case: CaseStudy, folder: Path) -> dict[str, Path]:
    """Merge the case's originals with every method; method name → merged directory."""
    texts = None
    if any(spec.method == "regmean" for spec in ctx.specs):
        texts = {t: folder / f"regmean-{t}.jsonl" for t in case.tasks}
        folder.mkdir(parents=True, exist_ok=True)
        for task, path in texts.items():
            write_jsonl(path, ({"text": t} for t in ctx.unlabeled[task]))
    # RegMean's Gram matrices at `hm3 merge`'s batch size, as the demo always computed them
    # (another padding changes their last bits)
    options = ctx.run.with_(batch_size=RunOptions().batch_size)
    for spec in ctx.specs:
        config = merge_config(case, spec, ctx.base, ctx.zoo, ctx.options.seed, texts)
        if spec == SEARCH:
            trials, seed = ctx.options.search_trials, ctx.options.seed
            searched_merge(
                config, case.tasks, ctx.data, folder / spec.name, trials=trials, seed=seed,
                options=ctx.run,
            )  # fmt: skip
        else:
            merge(config, folder / spec.name, options=options)
    return {spec.name: folder / spec.name for spec in ctx.specs}


def _predictors(
    ctx: Context, merged: dict[str, Path], texts: tuple[str, ...]
) -> dict[str, Predictor]:
    """Every merge, and (when aligning) its aligned twin on the same body, fit on ``texts``."""
    opts = ctx.options
    models: dict[str, Predictor] = {}
    for name, path in merged.items():
        body = SharedBody(load(path, options=ctx.run))
        models[name] = body.head()
        if opts.align:
            aligned = fit_alignment(body, ctx.originals, texts, opts.ridge, ctx.run.batch_size)
            models[f"{name}{ALIGNED}"] = aligned
    return models


def _write_aligned(
    ctx: Context, merged: dict[str, Path], texts: tuple[str, ...], file: Path
) -> None:
    """The aligned models as directories, written by ``hm3 align`` itself on ``texts``."""
    write_jsonl(file, ({"text": t} for t in texts))
    for name, path in merged.items():
        out = path.with_name(f"{name}{ALIGNED}")
        align(path, file, out, ridge=ctx.options.ridge, options=ctx.run)


def _limited(suite: Suite, options: DemoOptions) -> Suite:
    if options.eval_limit is None:
        return suite
    return suite.model_copy(update={"limit": options.eval_limit})
