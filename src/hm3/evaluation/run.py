"""Evaluate merged and original classifiers on a suite (paper §5): predictions and metrics.

Every model to compare is a column of the results: a merged checkpoint (answering all its tasks
in one forward pass), a single-task classifier, or the group ``original``: one original
classifier per task, each answering only its own task (renamed as given). Each classifier
predicts the distinct texts of the datasets concerning it once, in batches sorted by length.

Metrics: :mod:`hm3.evaluation.scoring`; ``results.json``'s schema: :mod:`hm3.evaluation.results`
(written by :mod:`hm3.evaluation.report`); suite files: :mod:`hm3.evaluation.suite`, not here.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import TextColumn

from hm3.errors import Hm3Error
from hm3.evaluation.bootstrap import compare_with_originals
from hm3.evaluation.expectations import check_expectations, check_originals, fix
from hm3.evaluation.results import DatasetInfo, EvaluationResult, TaskInfo
from hm3.evaluation.scoring import ORIGINAL, Predictions, score_model, suite_tasks
from hm3.evaluation.suite import Dataset, Suite, load_datasets
from hm3.evaluation.windowed import check_default_labels, windowed_proba
from hm3.model.classifier import Classifier, load
from hm3.model.labels import Task, directory_tasks, is_uninformative
from hm3.model.predictor import Predictor, check_windows, segment_softmax
from hm3.model.windows import Windows
from hm3.options import RunOptions, run_options
from hm3.progress import progress_bar

__all__ = ["ModelRef", "evaluate"]

ModelRef = Predictor | str | Path  # a loaded model (a Classifier, ...) or its directory


@dataclasses.dataclass(frozen=True)
class _Member:
    """One classifier of a model column; ``tasks`` are renamed to the names they answer for."""

    model: str
    ref: Predictor | Path
    tasks: tuple[Task, ...]


def evaluate(
    suite: Suite,
    models: Mapping[str, ModelRef],
    *,
    originals: Mapping[str, ModelRef] | None = None,
    bootstrap: int = 0,
    windows: Windows | None = None,
    options: RunOptions | None = None,
    **run: Any,
) -> EvaluationResult:
    """Run every model on the suite's datasets and score each task it answers.

    Args:
        suite: a :func:`~hm3.evaluation.suite.load_suite` suite (some tasks: ``.restricted``).
        models: column name → merged or ordinary classifier: its directory, or a loaded
            :class:`~hm3.model.predictor.Predictor` (a ``Classifier``, ...).
        originals: task name → original single-task classifier; together they form the model
            ``original``, each answering only the task it is mapped to.
        bootstrap: redraw every dataset's rows this many times (seeded by the suite's seed) and
            give each model its average F1 minus the originals' with a 95 % interval
            (:mod:`hm3.evaluation.bootstrap`); 0, the default, skips it. Needs ``originals`` and
            a model.
        windows: score texts longer than ``max_length`` tokens in overlapping windows
            (:mod:`hm3.model.windows`); ``None``, the default, truncates them (as Table 1 does).
        options: the :class:`~hm3.options.RunOptions` (or, overriding them, their names as
            keywords: ``progress=False``): ``batch_size``, ``progress``, and for directories
            ``device`` (CPU unless asked), ``dtype``, ``max_length``, ``allow_pickle``.

    Returns:
        An :class:`EvaluationResult`: originals first, then ``models`` in the order given.
    """
    opts = run_options(options, run)
    _check_args(suite, models, originals, bootstrap, windows)
    start = time.perf_counter()
    datasets = load_datasets(suite)
    members, tasks = _align_labels(_members(models, originals or {}))
    check_expectations(datasets, tasks)
    answered = [t.name for m in members if m.model != ORIGINAL for t in m.tasks]
    check_originals(datasets, list(originals or {}), answered)
    check_default_labels(windows, list(tasks))
    if bootstrap:
        _check_shared_tasks(members, suite_tasks(datasets))
    loader = functools.partial(load, options=opts)
    predictions = _predict_all(members, datasets, opts.batch_size, loader, opts.progress, windows)
    results = [
        score_model(name, _sources(members, name), datasets, tasks, predictions)
        for name in dict.fromkeys(m.model for m in members)
    ]
    if bootstrap:
        vs = compare_with_originals(predictions, datasets, list(models), bootstrap, suite.seed)
        results = [r.model_copy(update={"vs_original": vs.get(r.name)}) for r in results]
    return EvaluationResult(
        suite=suite.source,
        seed=suite.seed,
        limit=suite.limit,
        datasets=tuple(_dataset_info(d) for d in datasets),
        tasks=tuple(TaskInfo(name=name, labels=tasks[name]) for name in suite_tasks(datasets)),
        models=tuple(results),
        seconds=round(time.perf_counter() - start, 3),
    )


def _dataset_info(d: Dataset) -> DatasetInfo:  # what the result records of one dataset
    return DatasetInfo(name=d.name, path=str(d.path), rows=d.rows, evaluated=len(d.texts),
                       expect=dict(d.expect))  # fmt: skip


def _check_args(suite: Any, models: Any, originals: Any, draws: Any, windows: Any) -> None:
    """The arguments, before any work: a path or a dict where a typed object goes is named."""
    if not isinstance(suite, Suite):
        raise Hm3Error(f"suite: expected a Suite, got {type(suite).__name__}; read the file with "
                       "hm3.load_suite(PATH) (or build one with Suite.from_dict)")  # fmt: skip
    for what, refs, eg in (("models", models, "merged"), ("originals", originals or {}, "spam")):
        if not isinstance(refs, Mapping):
            raise Hm3Error(f"{what}: expected a dict of name -> directory or loaded classifier, "
                           f"got {type(refs).__name__}; e.g. {{'{eg}': DIR}}")  # fmt: skip
    check_windows(windows)
    if isinstance(draws, bool) or not isinstance(draws, numbers.Integral) or draws < 0:
        raise Hm3Error(f"bootstrap: expected a number of redraws >= 0 (e.g. 1000), got {draws!r}")
    if draws and not originals:
        raise Hm3Error("bootstrap: compares each model with the originals, and none were given; "
                       f"pass the originals ({fix('originals')}) or "
                       f"{fix('bootstrap')}")  # fmt: skip
    if draws and not models:
        raise Hm3Error("bootstrap: no model to compare with the originals; give a merged model "
                       f"too or {fix('bootstrap')}")  # fmt: skip


def _check_shared_tasks(members: Sequence[_Member], scored: Sequence[str]) -> None:
    """Before predicting: some model must answer a scored task that the originals answer."""
    theirs = {t.name for m in members if m.model == ORIGINAL for t in m.tasks} & set(scored)
    ours = {t.name for m in members if m.model != ORIGINAL for t in m.tasks}
    if not theirs & ours:
        raise Hm3Error(
            f"bootstrap: no model answers a task the originals answer in this suite (originals: "
            f"{', '.join(sorted(theirs)) or 'none'}; models: {', '.join(sorted(ours))}); give the "
            f"originals of the models' tasks or {fix('bootstrap')}")  # fmt: skip


def _members(models: Mapping[str, ModelRef], originals: Mapping[str, ModelRef]) -> list[_Member]:
    if not models and not originals:
        raise Hm3Error("models: nothing to evaluate; give at least one model or original")
    if ORIGINAL in models:  # originals given or not, the results would report it as them
        raise Hm3Error(f"models: {ORIGINAL!r} names the originals; rename it ({fix('name')})")
    members = []
    for task, ref in originals.items():
        own = _tasks_of(ref, f"originals[{task!r}]")
        if len(own) != 1:
            raise Hm3Error(
                f"originals {task}={_where(ref)}: expected a single-task classifier, found "
                f"{len(own)} tasks ({', '.join(t.name for t in own)}); pass it as a model instead"
            )
        members.append(_Member(ORIGINAL, _ref(ref), (dataclasses.replace(own[0], name=task),)))
    for name, ref in models.items():
        if not name:
            raise Hm3Error(f"models: empty name for {_where(ref)}; give it a name")
        members.append(_Member(name, _ref(ref), tuple(_tasks_of(ref, f"models[{name!r}]"))))
    return members


def _sources(members: Sequence[_Member], model: str) -> dict[str, str]:
    """Task → the directory of the classifier that answers it in the column ``model``."""
    return {t.name: _where(m.ref) for m in members if m.model == model for t in m.tasks}


def _ref(ref: ModelRef) -> Predictor | Path:
    return Path(ref) if isinstance(ref, str | Path) else ref


def _where(ref: ModelRef) -> str:
    return str(ref if isinstance(ref, str | Path) else ref.path)


def _tasks_of(ref: ModelRef, what: str) -> list[Task]:
    """A classifier's tasks, read from its config.json without loading weights."""
    if not isinstance(ref, str | Path):
        if not all(hasattr(ref, name) for name in ("tasks", "path", "logits")):
            raise Hm3Error(f"{what}: expected a model directory (str or Path) or a loaded "
                           f"classifier (hm3.load(DIR)), got {type(ref).__name__}")  # fmt: skip
        return list(ref.tasks)
    path = Path(ref)
    if not path.is_dir():
        raise Hm3Error(f"{path}: model directory not found; check the path")
    return directory_tasks(path, str(path))


def _align_labels(members: Sequence[_Member]) -> tuple[list[_Member], dict[str, tuple[str, ...]]]:
    """Give each task one label list over all members (task name → labels).

    A task's labels are the first informative ones among the models answering it; a model whose
    names for it are placeholders (``class_0``, ``LABEL_1``: an original without ``id2label``
    names, whose merge config named them) takes those names by position. Any other difference
    is an error.
    """
    labels: dict[str, tuple[str, ...]] = {}
    for member in members:
        for task in member.tasks:
            known = labels.get(task.name)
            if known is None or (_placeholders(known) and not _placeholders(task.labels)):
                labels[task.name] = task.labels
    aligned = []
    for member in members:
        tasks = tuple(_aligned(member.model, t, labels[t.name]) for t in member.tasks)
        aligned.append(dataclasses.replace(member, tasks=tasks))
    return aligned, labels


def _aligned(model: str, task: Task, labels: tuple[str, ...]) -> Task:
    if set(task.labels) == set(labels):
        return task
    if _placeholders(task.labels) and len(task.labels) == len(labels):
        return dataclasses.replace(task, labels=labels)
    raise Hm3Error(
        f"task {task.name!r}: model {model!r} has labels {', '.join(task.labels)} but another "
        f"model has {', '.join(labels)}; models compared on a task must share its labels"
    )


def _placeholders(labels: Sequence[str]) -> bool:
    return all(is_uninformative(label) for label in labels)


def _predict_all(
    members: Sequence[_Member],
    datasets: Sequence[Dataset],
    batch_size: int,
    loader: Callable[[Path], Classifier],
    progress: bool,
    windows: Windows | None = None,
) -> Predictions:
    """Each member predicts the distinct texts of the datasets expecting one of its tasks, once."""
    plans = []
    for member in members:
        names = {t.name for t in member.tasks}
        relevant = [d for d in datasets if names & set(d.expected)]
        texts = list(dict.fromkeys(t for d in relevant for t in d.texts))
        if texts:
            plans.append((member, relevant, texts))
    out: Predictions = {}
    with progress_bar(
        progress, TextColumn("batches"), label="evaluating {task.description}"
    ) as bar:
        job = bar.add_task("", total=sum(-(-len(texts) // batch_size) for _, _, texts in plans))
        for n, (member, relevant, texts) in enumerate(plans, 1):
            who = member.model + (f" ({member.tasks[0].name})" if member.model == ORIGINAL else "")
            bar.update(job, description=f"{who} [{n}/{len(plans)}]")
            clf = member.ref
            if isinstance(clf, Path):
                clf = loader(clf)
            advance = functools.partial(bar.advance, job)
            if windows is None:
                probs = segment_softmax(
                    _logits(clf, texts, batch_size, advance), list(member.tasks)
                )
            else:
                probs = windowed_proba(
                    clf, member.model, member.tasks, texts, batch_size, windows, advance
                )
            out.update(_labels_per_dataset(member, relevant, texts, probs))
    return out


def _labels_per_dataset(
    member: _Member, datasets: Sequence[Dataset], texts: Sequence[str], probs: dict[str, np.ndarray]
) -> Predictions:
    """Map predictions on the distinct ``texts`` back to each dataset's rows, as label names."""
    row = {text: i for i, text in enumerate(texts)}
    out: Predictions = {}
    for data in datasets:
        idx = np.array([row[t] for t in data.texts], dtype=np.int64)
        for task in member.tasks:
            if task.name in data.expected:
                best = probs[task.name][idx].argmax(axis=1)
                out[(member.model, task.name, data.name)] = np.asarray(task.labels, object)[best]
    return out


def _logits(
    clf: Predictor, texts: Sequence[str], batch_size: int, advance: Callable[[], None]
) -> np.ndarray:
    """Logits in input order; batches of similar length, ``advance()`` called after each."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), clf.tasks[-1].end), dtype=np.float32)
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        out[idx] = clf.logits([texts[i] for i in idx], batch_size=len(idx))
        advance()
    return out
