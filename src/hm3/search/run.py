"""``hm3 search``: the paper's model search (Algorithm 3), in memory, resumable and shared.

:func:`search` checks every input before it writes anything — the recipe and its ``search:``
space (:mod:`hm3.search.space`), the models (:class:`~hm3.search.engine.Engine`), the suites and
samples (:mod:`hm3.search.data`), the study's fingerprint and its files' digests
(:mod:`hm3.search.identity`) — then runs trials until the study holds ``trials`` finished
ones (or ``timeout`` passes), writing ``trials.csv`` after each. The worker that finishes the
study (or stops at its timeout) writes ``best/``, or rewrites it when it no longer holds the
study's best (a run stopped before it wrote it); every worker draws the plots of what the
study holds. ``--out`` is made, or replaced with ``--force``, only once every input, the
storage and the study have passed their checks. Ctrl-C stops with one line (the trial it cut
short is failed, never counted). ``self_model`` merges one model with itself (two independent
DARE draws per trial, paper §5.4) and scores its first copy.
The options, their checks, the recipe and the samples are :mod:`hm3.search.inputs`'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import TextColumn

from hm3.merging.config import MergeConfig
from hm3.options import RunOptions, run_options
from hm3.progress import progress_bar
from hm3.search import identity, outputs, workers
from hm3.search import study as studies
from hm3.search.database import lost
from hm3.search.engine import Engine
from hm3.search.inputs import (
    SearchSpec,
    check_out,
    check_recipe,
    check_spec,
    read_recipe,
    read_samples,
    search_inputs,
)
from hm3.search.objective import Material
from hm3.search.out_dir import OutLock, is_database, open_study
from hm3.search.trial import trial_config


@dataclass
class SearchResult:
    out: Path
    finished: int
    pruned: int
    best_number: int | None
    best_values: dict[str, Any]
    best: dict[str, Any]  # the best trial's scores (val/test/agreement...)
    originals: dict[str, Any]  # sample → {tasks, average}
    wrote_best: bool  # this run wrote best/
    best_current: bool  # best/ holds the study's best trial (written by this run or before)
    seconds: float
    self_merge: bool
    files: list[Path] = field(default_factory=list)


def search(
    spec: SearchSpec, out: str | Path, options: RunOptions | None = None, **run: Any
) -> SearchResult:
    """Run (or join, or resume) a search; see the module docstring.

    Args:
        spec: what to search and how (:class:`~hm3.search.inputs.SearchSpec`).
        out: the study's directory (trials.csv, plots, ``best/``).
        options: the :class:`~hm3.options.RunOptions` (``device``, ``dtype``, ``batch_size``,
            ``max_length``, ``progress``, ``force``, ``allow_pickle``); ``**run``: the same by
            name, overriding them (``search(spec, out, progress=False)``).

    Optuna logs only warnings during the search; its verbosity is the caller's again after.
    """
    import optuna

    started = time.perf_counter()
    options = run_options(options, run).resolved()  # a bad option fails before any work
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return _search(spec, Path(out), options, started)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _search(spec: SearchSpec, out: Path, options: RunOptions, started: float) -> SearchResult:
    check_spec(spec)
    recipe, space, source = read_recipe(spec)
    config = MergeConfig.from_dict(recipe, source=source)
    check_recipe(config, options.max_length)
    reads = search_inputs(spec, config)
    replace = check_out(spec, out, options.force, reads)
    lock = OutLock(out)  # --out's own study: one process at a time (shared ones take none)
    try:
        if spec.storage is None or replace:
            lock.take()  # an --out that exists: refused now if a search runs there
        return _search_out(spec, out, options, started, config, recipe, space, source, reads,
                           replace, lock)  # fmt: skip
    finally:
        lock.release()


def _search_out(
    spec: SearchSpec, out: Path, options: RunOptions, started: float, config: MergeConfig,
    recipe: dict[str, Any], space: Any, source: str, reads: list[Path], replace: bool,
    lock: OutLock,
) -> SearchResult:  # fmt: skip
    # a database is reached before the models load, so that a bad URL or a server down fails fast
    database = studies.open_storage(spec.storage, out) if is_database(spec.storage) else None
    engine = Engine(config, options)
    names = [t.name for t in engine.tasks]
    for method in space.methods(config.merge_method):  # every method's config, before any trial
        trial_config(recipe, {"merge_method": method}, names, config.seed, source)
    scored = engine.tasks[:1] if spec.self_model else engine.tasks
    val, test = read_samples(spec, scored)  # a bad suite fails before the alignment's start-up
    if config.align is not None:
        engine.prepare_alignment(config, config.align.texts)
    material = Material(engine, recipe, space, config.merge_method, config.seed, scored,
                        spec.objective, spec.prune, source)  # fmt: skip
    material.prepare(val, test, spec.texts, spec.text_column, spec.val_samples)
    described = {
        "recipe": recipe, "space": space.model_dump(mode="json"), "self": spec.self_model,
        "suite": _abs(spec.suite), "test_suite": _abs(spec.test_suite), "texts": _abs(spec.texts),
        "val": spec.val_samples, "test": spec.test_samples, "objective": spec.objective,
        "sampler": spec.sampler, "seed": spec.seed, "prune": spec.prune,
    }  # fmt: skip
    later = {"dtype": options.dtype or "float32", "max_length": options.max_length,
             "text_column": spec.text_column}  # fmt: skip
    described |= {k: v for k, v in later.items() if v != identity.LEFT_OUT[k]}
    files = identity.contents(p for p in reads if p != spec.config and str(p) != spec.storage)
    study = open_study(spec, out, (described, files), replace, database)
    if spec.storage is None:
        lock.take()  # a new --out: held from now on
    study.set_user_attr("originals", material.originals)
    studies.reap_dead_trials(study, own=spec.storage is None)
    done, running = studies.counted(study)
    found_full = done >= spec.trials and running == 0  # a rerun after the study ended
    searching = True
    try:
        mine, timed_out = _loop(study, material, spec, out, options, started)
        searching = False
        return _finish(study, material, spec, out, options, (mine, timed_out, found_full), started)
    except KeyboardInterrupt:
        outputs.write_trials_csv(study, out)  # it may have stopped between a trial and its row
        done, _ = studies.counted(study)
        where = f"{out}; rerun with --resume" if spec.storage is None else \
            f"study {spec.study!r}; rerun the command"  # fmt: skip
        goal = "to go on" if searching else "to finish its outputs (best/, the plots)"
        raise KeyboardInterrupt(f"{done} trials finished are kept in {where} {goal}") from None
    except Exception as exc:  # a database server stopped mid-search is not a bug of hm3's
        gone = lost(exc, spec.storage) if is_database(spec.storage) else None
        if gone is None:
            raise
        raise gone from None


def _loop(
    study: Any, material: Material, spec: SearchSpec, out: Path, options: RunOptions,
    started: float,
) -> tuple[set[int], bool]:  # fmt: skip
    """Run trials until the study is full or the timeout passes.

    The timeout counts from ``started``, the command's start: reading the models and scoring
    the originals (minutes for a large suite) are part of the time a user gave.

    Returns:
        The numbers of the trials this worker started, and whether the timeout stopped it.
    """
    mine: set[int] = set()
    deadline = None if spec.timeout is None else started + spec.timeout
    best = TextColumn("best {task.fields[best]}")
    with progress_bar(options.progress, best, label="searching") as bar:
        lines = options.progress and bar.disable  # off a terminal: a line per trial, for logs
        done, _ = studies.counted(study)
        job = bar.add_task(
            "search", total=spec.trials, completed=done, best=outputs.best_text(study)
        )

        while deadline is None or time.perf_counter() < deadline:
            ran = studies.run_one(
                study, material.objective, spec.sampler, spec.seed, spec.trials, mine.add
            )
            if not ran:  # others' trials left: wait for them (and redo a dead worker's)
                if workers.waited_for_others(study, spec, deadline):
                    continue
                return mine, False
            outputs.write_trials_csv(study, out)
            done, _ = studies.counted(study)
            best_now = outputs.best_text(study)
            bar.update(job, completed=done, best=best_now)
            line = lines and outputs.trial_line(study, max(mine), done, spec.trials, best_now)
            if line:
                bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
    return mine, True


def _finish(
    study: Any, material: Material, spec: SearchSpec, out: Path, options: RunOptions,
    ended: tuple[set[int], bool, bool], started: float,
) -> SearchResult:  # fmt: skip
    """``ended``: the trials this worker ran, whether its timeout stopped it, and whether it
    found the study full when it started."""
    from optuna.trial import TrialState

    files = [outputs.write_trials_csv(study, out)]
    trials = outputs.finished(study)
    done, _ = studies.counted(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best_trial = max(complete, key=lambda t: (t.value, -t.number), default=None)
    wrote = current = False
    if best_trial is not None:
        label = outputs.best_label(best_trial.number, study.user_attrs[identity.FINGERPRINT])
        current = outputs.written_best(out) == label
        if not current and workers.best_due(study, spec, out, ended, label):
            names = [t.name for t in material.engine.tasks]
            values = best_trial.user_attrs["values"]
            config = trial_config(material.recipe, values, names, best_trial.user_attrs["seed"],
                                  material.source)  # fmt: skip
            files.append(outputs.write_best(config, out, options, label))
            study.set_user_attr(workers.BEST_WRITTEN, label)
            wrote = current = True
    files += outputs.write_plots(study, out, material.originals)
    attrs = best_trial.user_attrs if best_trial is not None else {}
    return SearchResult(
        out=out,
        finished=done,
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        best_number=best_trial.number if best_trial is not None else None,
        best_values=dict(attrs.get("values", {})),
        best={k: v for k, v in attrs.items() if k not in ("values", "worker")},
        originals=material.originals,
        wrote_best=wrote,
        best_current=current,
        seconds=time.perf_counter() - started,
        self_merge=spec.self_model is not None,
        files=files,
    )


def _abs(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


__all__ = ["SearchResult", "search"]
