"""The Optuna study under a search: storage, samplers, pruner, and the rules that keep it whole.

- **Storage.** Default: a journal file ``study.journal`` in ``--out`` (append-only, so a process
  killed at any moment loses at most the trial it was running). ``--storage`` takes a database
  URL (``postgresql://…``, ``sqlite:///…``: Optuna's RDB storage, with heartbeats so a dead
  worker's trial is failed by the others) or a journal file path shared by workers on one
  machine or a shared file system.
- **Identity.** The study records a hash of everything that decides its trials (recipe and
  space, samples, objective, sampler, seed) and a digest of every file it reads
  (:mod:`hm3.search.identity`); joining or resuming it with another hash, or after a model or
  suite changed in place, is refused, so two studies never mix in one.
- **Journal files** are checked before anything is appended, and their lock is taken and given
  back with Ctrl-C held (:mod:`hm3.search.journal`).
- **Dead trials.** A trial left ``RUNNING`` by a process of this machine that no longer exists
  (SIGKILL) is marked failed before new trials start; it is not counted and not repeated. In
  ``--out``'s own journal (one worker) every ``RUNNING`` trial is. A trial stopped by Ctrl-C
  is failed by Optuna, without its log lines: the command says it stopped in one line.
- **Samplers** (all seeded): ``paper`` and ``random`` draw every parameter independently
  (``paper`` = the declared priors, Beta included, :mod:`hm3.search.trial`), ``tpe`` and
  ``cmaes``. The sampler is rebuilt for each trial with a seed derived from ``--seed`` and
  the trial's number, so a resumed study continues the sequence instead of replaying its
  first draws, and two workers never draw alike.
- **Pruner**: none of Optuna's. With ``--prune`` the objective reports each slice and stops a
  trial by :mod:`hm3.search.pruning`'s paired rule, which needs the trials' decisions, not
  only their intermediate values.

It runs no model; :mod:`hm3.search.run` drives trials through :func:`run_one`.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error
from hm3.io.signals import held
from hm3.search import identity
from hm3.search.database import database_url, open_fix, shown
from hm3.search.journal import open_journal

SAMPLERS = ("paper", "random", "tpe", "cmaes")
JOURNAL = "study.journal"
WORKER = "worker"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_storage(url: str | None, out: Path) -> Any:
    """The study's storage: a database URL, a journal file path, or ``out/study.journal``."""
    if url is not None and "://" in url:
        opened = database_url(url)  # the driver named; an in-memory database refused
        try:
            return _open_rdb(opened)
        except Exception as exc:  # SQLAlchemy: no server, bad credentials, no driver
            detail = " ".join(str(exc).split())[:200]
            raise Hm3Error(f"--storage {shown(url)}: cannot open the database ({detail}); "
                           f"{open_fix(url)}") from None  # fmt: skip
    path = Path(url) if url is not None else out / JOURNAL
    return open_journal(path, f"--storage {url}" if url is not None else str(path))


def _open_rdb(url: str, attempts: int = 8) -> Any:
    """Optuna's RDB storage, with heartbeats so a dead worker's trial is failed by the others.

    Opening creates Optuna's tables when the database has none. Workers started together on an
    empty database race to create them, and the losers get a duplicate-object error from the
    server (PostgreSQL: ``pg_type_typname_nsp_index``); they retry after a short random wait, by
    when the winner's tables exist and opening only checks them.
    """
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are deliberate; the notice is noise
                warnings.simplefilter("ignore", ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)
        except (IntegrityError, ProgrammingError):
            attempt += 1
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.05, 0.1) * 2**attempt)


def load_study(
    storage: Any,
    name: str,
    spec: dict[str, Any],
    files: dict[str, str],
    *,
    resume: bool,
    shared: bool,
) -> Any:
    """Create the study, or join/resume it when its fingerprint and files match.

    Args:
        storage: from :func:`open_storage`.
        name: the study's name (``--study``).
        spec: what decides this run's trials; ``files``: its inputs' digests
            (:mod:`hm3.search.identity`).
        resume: ``--resume``: the study must exist (in ``--out``'s own storage).
        shared: the storage was given with ``--storage``: joining an existing study is normal.
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()  # restored after: the caller's logging
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        exists = name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
        if resume and not exists:
            raise Hm3Error(
                f"--resume: no study {name!r} to resume in the storage; run without --resume to "
                "start it"
            )
        if exists:  # loading writes nothing: a refused resume leaves the storage as it was
            study = optuna.load_study(study_name=name, storage=storage)
        else:
            study = optuna.create_study(
                storage=storage, study_name=name, direction="maximize", load_if_exists=True
            )
        how = "--resume" if resume else ("--storage/--study" if shared else "the study")
        fresh = "--study NAME" if shared else "--study NAME or a new --out"
        identity.check(study, storage, spec, files, how=how, fresh=fresh)
        return study
    finally:
        optuna.logging.set_verbosity(verbosity)


def reap_dead_trials(study: Any, *, own: bool = False) -> int:
    """Fail the RUNNING trials whose worker was a process of this machine that is gone.

    Called only while this process runs no trial, so one marked as its own is a predecessor's
    with the same host name and pid (a restarted container). With ``own`` (the study is
    ``--out``'s own, which one worker runs) every RUNNING trial is failed: its worker is gone,
    whatever it was (killed between the trial's creation and its first write, or on a host
    whose name has changed since, as a restarted container's does). A trial another worker
    failed first is skipped.
    """
    import optuna
    from optuna.trial import TrialState

    host, me = socket.gethostname(), worker_id()
    reaped = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = str(trial.user_attrs.get(WORKER, ""))
        worker_host, _, pid = who.rpartition(":")
        gone = who == me or (worker_host == host and pid.isdigit() and not _alive(int(pid)))
        if own or gone:
            try:
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another waiting worker failed it first
            reaped += 1
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_sampler(kind: str, seed: int) -> Any:
    import optuna

    if kind in ("paper", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    if kind == "cmaes":
        independent = optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.CmaEsSampler(
            seed=seed, independent_sampler=independent, warn_independent_sampling=False
        )
    raise Hm3Error(f"--sampler {kind}: expected one of {', '.join(SAMPLERS)}")


def counted(study: Any) -> tuple[int, int]:
    """(finished trials: complete or pruned, trials running now)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done, running


class Surplus(Exception):
    """The study already has its trials: this one is not run."""


def run_one(
    study: Any,
    objective: Callable[[Any], float],
    kind: str,
    seed: int,
    total: int,
    started: Callable[[int], None] = lambda number: None,
) -> bool:
    """Run one trial through ``study.optimize``; ``False`` when the study has ``total`` trials.

    The sampler is reseeded from ``seed`` and the trial's number once the storage has given it
    one (Optuna samples lazily, at the first ``suggest``), so two workers that start at the
    same moment never draw alike, and one worker draws as many would. A trial numbered past
    ``total`` counted ones (another worker raced it in) is failed as surplus, unrun.
    ``started`` is told each trial's number as it starts (surplus ones included).

    Ctrl-C and SIGTERM are held (:func:`hm3.io.signals.held`) from the ask until the trial
    names its worker, and from the objective's end until Optuna has stored it. Between ask and
    name, a shared study would keep a trial ``RUNNING`` that no worker may reap, and never end;
    inside Optuna's tell, an interrupt becomes its ``UnboundLocalError`` (Optuna 5.1).
    """
    import optuna
    from optuna.trial import TrialState

    done, running = counted(study)
    if done + running >= total:
        return False
    study.sampler = optuna.samplers.RandomSampler(seed=seed)  # only asks; reseeded below
    claim, settle = ExitStack(), ExitStack()

    def guarded(trial: optuna.Trial) -> float:
        try:
            trial.set_user_attr(WORKER, worker_id())
            claim.close()  # a Ctrl-C held since the ask lands here: the trial fails as it should
            started(trial.number)
            study.sampler = make_sampler(kind, (seed * 1_000_003 + trial.number) % (2**32))
            before = [
                t for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and t.state != TrialState.FAIL
            ]  # fmt: skip
            if len(before) >= total:
                trial.set_user_attr("surplus", True)
                raise Surplus
            return objective(trial)
        except KeyboardInterrupt:  # Optuna fails the trial, then would log it with a traceback
            optuna.logging.set_verbosity(optuna.logging.CRITICAL)
            raise
        finally:
            settle.enter_context(held())  # until Optuna has told the trial's end (see above)

    verbosity = optuna.logging.get_verbosity()
    claim.enter_context(held())  # until the trial names its worker (see above)
    try:
        study.optimize(guarded, n_trials=1)
    except Surplus:
        return False
    finally:
        optuna.logging.set_verbosity(verbosity)
        claim.close()
        settle.close()  # a held Ctrl-C lands here, after the trial's end is stored
    return True
