"""``hm3 demo``: the paper's two case studies and a four-task merge, on real classifiers, offline.

:func:`run_demo` runs the whole pipeline and writes one report directory:

1. fetch the pinned base encoder and data (:mod:`hm3.demo.sources.fetch`), cut the seeded splits
   and suites (:mod:`hm3.demo.data.prepare`);
2. fine-tune the four originals from the base (:mod:`hm3.demo.train.classifier`; cached by a
   hash of data and settings, so a second run trains nothing);
3. score each original on its own test set, then, per case study — ``prompt_attack +
   toxicity`` (paper case study 1), ``spam + sentiment`` (case study 2) and all four — merge
   with each of Table 1's merges (:mod:`hm3.demo.cases`) through :mod:`hm3.recipe`, align every
   merge's heads on the unlabeled texts (``hm3 align``'s fit) and evaluate every merge and its
   aligned twin against the originals on the case's tasks of the paper-style suite
   (:mod:`hm3.demo.steps`);
4. write Table 1 and the evaluation reports (:mod:`hm3.demo.summary`).

On 2 CPU cores forward passes are the whole cost, so the originals' logits and each merge's
body features are computed once per text and shared (:mod:`hm3.demo.memo`, tested equal
to running ``hm3 align`` and ``hm3 evaluate`` on directories). The report directory appears
complete or not at all. Merged models (and aligned ones, written by ``hm3 align`` itself)
live in it only with ``keep_models``. This module sets up a run (data, zoo, the originals'
memoised logits, the alignment texts); :mod:`hm3.demo.cases` says what is merged,
:mod:`hm3.demo.steps` runs the steps, and the library does the work.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from hm3.demo.cases import CASES, DemoOptions, method_specs, train_zoo
from hm3.demo.data.prepare import DemoData, check_seed, prepare_data
from hm3.demo.data.spec import TASKS
from hm3.demo.memo import MemoLogits
from hm3.demo.sources.fetch import base_model_dir, cache_root
from hm3.demo.steps import Context, Steps, run_case, score_originals
from hm3.demo.summary import DemoResult, write_summary
from hm3.demo.train.classifier import TrainedClassifier
from hm3.errors import Hm3Error
from hm3.io.atomic import atomic_dir, check_not_cwd, check_output
from hm3.io.texts import TextCount, iter_text_batches, open_texts
from hm3.model.classifier import load
from hm3.options import RunOptions

log = logging.getLogger("hm3")


def run_demo(
    out: str | Path,
    *,
    cache_dir: Path | None = None,
    options: DemoOptions | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Build (or reuse) the zoo, merge, align, evaluate, and write the report to ``out``.

    Args:
        out: the report directory; must not exist unless ``options.run.force``.
        cache_dir: where sources, data and the zoo are kept (default: ``HM3_CACHE`` or
            ``~/.cache/hm3``).
        options: see :class:`~hm3.demo.cases.DemoOptions` (default: its defaults);
            ``options.run`` also says whether to show progress bars and to replace an existing
            ``out`` once the new report is complete.
        console: where step messages go (default: stderr).

    Returns:
        A :class:`~hm3.demo.summary.DemoResult` (Table 1, originals, timings).
    """
    started = time.perf_counter()
    out = Path(out)
    options = options or DemoOptions()
    run = _checked(options.run)
    check_seed(options.seed)  # before the downloads, not in them
    options = replace(options, run=run)
    check_output(out, run.force)
    if run.force:  # atomic_dir would refuse it, but only after the downloads and fine-tuning
        check_not_cwd(out)
    cache_root(cache_dir)  # a file there is refused before any step starts
    specs = method_specs(options.methods)
    say = Steps(console or Console(stderr=True))
    with say.step("fetching the base model and data", "data"):
        base = base_model_dir(cache_dir)
        data = prepare_data(cache_dir, seed=options.seed, quick=options.quick)
    with say.step("fine-tuning the four originals (cached after the first run)", "train"):
        zoo = train_zoo(base, data, cache_dir, seed=options.seed, progress=run.progress)
    with atomic_dir(out, run.force) as tmp:
        runners = _originals(zoo, run)
        ctx = Context(base, data, zoo, runners, _texts_by_task(data), options, tmp, say, specs)
        with say.step("scoring each original on its own test set", "originals"):
            originals = score_originals(ctx)
        _keep(runners)
        cases = []
        for case in CASES:
            cases.append(run_case(ctx, case))
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
            base_model=str(base),
        )
        write_summary(result, tmp, data)
    return result


def _checked(run: RunOptions) -> RunOptions:
    """``run`` with its device resolved; what the models could only refuse after the downloads
    and the fine-tuning is refused now (a missing CUDA, a --max-length that reads no text)."""
    run = run.resolved()
    if run.max_length <= _SPECIAL_TOKENS:
        raise Hm3Error(f"--max-length {run.max_length}: too small to read any text (the demo's "
                       f"MiniLM adds {_SPECIAL_TOKENS} special tokens); give at least "
                       f"{_SPECIAL_TOKENS + 1}, e.g. the default 64")  # fmt: skip
    return run


_SPECIAL_TOKENS = 2  # [CLS] and [SEP]: every demo model has the base's BERT tokenizer


def _originals(zoo: dict[str, TrainedClassifier], run: RunOptions) -> dict[str, MemoLogits]:
    """Each original, with its logits kept beside it in the zoo (they never change)."""
    return {
        name: MemoLogits(
            load(clf.path, options=run),
            clf.path.with_name(f"{clf.path.name}.logits-{run.max_length}.npz"),
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
    matters, other domains neither help nor hurt (docs/results/alignment.md), and fewer texts cost
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
