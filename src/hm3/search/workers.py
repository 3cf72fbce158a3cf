"""The workers of one study: what one does while the others' trials run, and which writes
``best/``.

A study shared through ``--storage`` has workers on any number of machines; each runs trials
until the study is full. :func:`waited_for_others` is a worker's wait for the last trials, which
run elsewhere (failing those whose worker died, so that someone runs them again);
:func:`best_due` decides whether this worker writes ``best/`` of its ``--out``.
"""

from __future__ import annotations

import socket
import time
import warnings
from pathlib import Path
from typing import Any

from hm3.search import study as studies
from hm3.search.inputs import SearchSpec
from hm3.search.out_dir import is_database


def waited_for_others(study: Any, spec: SearchSpec, deadline: float | None) -> bool:
    """With the study's last trials running in other workers of a shared study: wait for them,
    failing those whose worker died (a pid of this machine gone, or an RDB heartbeat stopped),
    and say whether that left trials to run. Not where nothing could tell a dead worker from a
    live one (a journal's worker on another machine): the others then finish the study."""
    import optuna
    from optuna.trial import TrialState

    here = socket.gethostname()
    while spec.storage is not None and (deadline is None or time.perf_counter() < deadline):
        studies.reap_dead_trials(study)
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9: noise to a user
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RDB storages: heartbeats (30 s grace)
        done, running = studies.counted(study)
        if done + running < spec.trials:
            return True
        others = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        hosts = {str(t.user_attrs.get(studies.WORKER, "")).rpartition(":")[0] for t in others}
        if not others or (not is_database(spec.storage) and hosts != {here}):
            return False
        left = _WAIT_S if deadline is None else deadline - time.perf_counter()
        time.sleep(max(0.0, min(_WAIT_S, left)))
    return False


_WAIT_S = 2.0  # between looks at the other workers' running trials


def best_due(
    study: Any, spec: SearchSpec, out: Path, ended: tuple[set[int], bool, bool], label: str
) -> bool:  # fmt: skip
    """Whether this worker is to write ``best/`` (when it does not hold the study's best).

    ``--out``'s own study: once it is full (whatever stopped an earlier run first), or when the
    timeout stopped this run (even before a trial of its own: a resume of a killed run). A
    shared study: written once, by the worker whose trial ended last
    (a surplus one included), or by one whose timeout stopped it; a worker that finds the study
    full rewrites a ``best/`` of its ``--out`` that is no longer the best, and one that found
    it full when it started writes it when no worker has (its writer was stopped mid-write, e.g.
    by Ctrl-C). ``ended``: this worker's trials, whether its timeout stopped it, and whether it
    found the study full at its start (not: full by the time a wait for others' trials ended).
    """
    mine, timed_out, found_full = ended
    done, running = studies.counted(study)
    full = done >= spec.trials and running == 0
    if timed_out and (mine or spec.storage is None):
        return True
    if spec.storage is None:
        return full
    ended = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    last = max(ended, key=lambda t: (t.datetime_complete, t.number), default=None)
    finisher = full and last is not None and last.number in mine
    unwritten = found_full and study.user_attrs.get(BEST_WRITTEN) != label
    return finisher or (full and ((out / "best").is_dir() or unwritten))


BEST_WRITTEN = "hm3_best"  # the study's attribute: the label of the last best/ written
