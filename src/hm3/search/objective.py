"""One trial of a search, and the fixed material every trial is scored on.

:class:`Material` is built once per process: the :class:`~hm3.search.engine.Engine`, the
validation and test samples (:mod:`hm3.search.data`), the unlabeled texts of the label-free
objective, and the originals' logits on all of them (the originals are then released).
:meth:`Material.objective` is Optuna's objective: draw the trial's values, merge them into the
live model, score slice by slice (with ``--prune``, each slice is reported to Optuna and
:class:`hm3.search.pruning.Pruner` may stop the trial), and, when the trial beats every
finished one, score it on the test sample. The scores are stored as the
trial's user attributes, which :mod:`hm3.search.outputs` reads back. A trial whose values
cannot merge is skipped with one warning line and fails in Optuna (not counted toward
``--trials``); :data:`MAX_INVALID` of them in a row stop the search.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hm3.alignment.originals import resolve_originals
from hm3.errors import Hm3Error
from hm3.evaluation.suite import Dataset
from hm3.io.texts import TextCount, iter_text_batches, open_texts
from hm3.model.features import load_originals, original_logits
from hm3.model.labels import Task
from hm3.search.data import SLICES, Bank, Labelled, Unlabelled, agreement_scores, f1_scores
from hm3.search.engine import Engine
from hm3.search.pruning import ATTR, Pruner, decisions, encode
from hm3.search.space import SearchSpace
from hm3.search.trial import suggest, trial_config

log = logging.getLogger("hm3")

#: trials in a row whose values cannot merge before the search stops
MAX_INVALID = 10


@dataclass
class Material:
    """Everything a trial needs, prepared once."""

    engine: Engine
    recipe: dict[str, Any]
    space: SearchSpace
    method: str
    seed: int
    scored: list[Task]  # the tasks scored (a self-merge scores its first copy only)
    objective_kind: str  # "f1" or "agreement"
    prune: bool
    source: str
    val: Labelled | None = None
    test: Labelled | None = None
    unlabelled: Unlabelled | None = None
    pruner: Pruner | None = None
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)  # sample → scores
    invalid_in_a_row: int = 0  # trials skipped since the last that merged

    def prepare(
        self,
        val: list[Dataset] | None,
        test: list[Dataset] | None,
        texts: Path | None,
        text_column: str,
        max_texts: int,
    ) -> None:
        """Tokenise the samples once; run the originals on them once."""
        eng, bs = self.engine, self.engine.options.batch_size
        originals = resolve_originals(eng.tasks, None, eng.clf.path)
        # the originals' reference scores in float32, whatever dtype the trials are scored in
        opts = eng.options.with_(max_length=eng.clf.max_length, dtype=None)
        runners = load_originals(originals, opts)

        def logits_of(bank: Bank) -> np.ndarray:
            out = np.zeros((len(bank.texts), eng.tasks[-1].end), dtype=np.float32)
            for _, idx, _ in bank.batches:
                texts = [bank.texts[i] for i in idx]
                out[idx] = original_logits(eng.tasks, originals, runners, texts).numpy()
            return out

        # the one sample a pruner reads slice by slice (the objective's)
        pruned = None if not self.prune else "val" if self.objective_kind == "f1" else "texts"
        for name, datasets in (("val", val), ("test", test)):
            if datasets is None:
                continue
            sample = Labelled.build(eng.clf, datasets, self.scored, bs, name == pruned)
            setattr(self, name, sample)
            per_task, avg = f1_scores(sample, logits_of(sample.bank), self.scored)
            self.originals[name] = {"tasks": per_task, "average": avg}
        if texts is not None:
            lines = open_texts(texts, text_column, options=("--texts", "--text-column"))
            found = [t for b in iter_text_batches(lines, 256, max_texts, TextCount()) for t in b]
            if not found:  # every trial would score NaN, which Optuna fails and never counts
                raise Hm3Error(f"--texts {texts}: every text in column {text_column!r} is blank; "
                               "give a file of unlabeled texts")  # fmt: skip
            stage = (np.arange(len(found)) * SLICES) // max(len(found), 1)
            bank = Bank.build(eng.clf, found, stage, bs, pruned == "texts")
            self.unlabelled = Unlabelled(bank, logits_of(bank))
        if self.prune:
            sample = self.val if self.objective_kind == "f1" else self.unlabelled
            assert sample is not None
            self.pruner = Pruner(sample, self.scored, self.seed)

    def objective(self, trial: Any) -> float:
        """Optuna's objective: merge the trial's config, score it, test a new best."""
        import optuna

        started = time.perf_counter()
        _SKIPPED.number = None
        if not self._merge(trial):
            return math.nan  # Optuna fails the trial: not counted, not in trials.csv
        model = self.engine.clf.model
        stages = range(SLICES) if self.prune else [SLICES - 1]
        sample = self.val if self.objective_kind == "f1" else self.unlabelled
        assert sample is not None
        bank = sample.bank
        logits = np.zeros((len(bank.texts), self.engine.tasks[-1].end), dtype=np.float32)
        for stage in stages:
            bank.run(model, logits, range(stage + 1) if not self.prune else [stage])
            value, attrs = self._score(logits, stage)
            if self.pruner is not None:
                trial.report(value, stage)
                if stage < SLICES - 1 and self.pruner.should_stop(trial.study, logits, stage):
                    self._store(trial, attrs, started)
                    raise optuna.TrialPruned
        if not math.isfinite(value):  # Optuna would fail the trial and draw another, forever
            raise RuntimeError(f"trial {trial.number} scored {value}; this is a bug in hm3")
        if self.objective_kind == "agreement" and self.val is not None:  # labels, to compare
            val_logits = np.zeros((len(self.val.bank.texts), logits.shape[1]), np.float32)
            self.val.bank.run(model, val_logits, range(SLICES))
            per_task, avg = f1_scores(self.val, val_logits, self.scored)
            attrs.update({"val": per_task, "val_average": avg})
        ahead = (self.pruner is not None or self.test is not None) and value > _best_so_far(trial)
        if self.pruner is not None and ahead:  # the decisions later trials are pruned against
            trial.set_user_attr(ATTR, encode(decisions(logits, self.scored)))
        if self.test is not None and ahead:
            test_logits = np.zeros((len(self.test.bank.texts), logits.shape[1]), np.float32)
            self.test.bank.run(model, test_logits, range(SLICES))
            per_task, avg = f1_scores(self.test, test_logits, self.scored)
            attrs.update({"test": per_task, "test_average": avg})
        self._store(trial, attrs, started)
        return value

    def _merge(self, trial: Any) -> bool:
        """Draw the trial's values and merge them into the live model.

        Returns:
            ``False`` when they cannot merge (a value its method refuses, a merge that
            overflows): the trial is skipped with one warning line and its reason in the user
            attribute ``invalid``; the objective then returns NaN, which Optuna stores as a
            failed trial (not counted, not repeated), and its own lines about it are dropped.

        Raises:
            Hm3Error: when :data:`MAX_INVALID` trials in a row could not merge.
        """
        names = [t.name for t in self.engine.tasks]
        values = suggest(trial, self.space, self.method, names)
        seed = self.seed + trial.number
        trial.set_user_attr("values", values)
        trial.set_user_attr("seed", seed)
        try:
            self.engine.apply(trial_config(self.recipe, values, names, seed, self.source))
        except Hm3Error as exc:  # the next trial's merge rewrites every tensor
            reason = str(exc)
        else:
            self.invalid_in_a_row = 0
            return True
        trial.set_user_attr("invalid", reason)
        _quiet_optuna().number = trial.number
        self.invalid_in_a_row += 1
        if self.invalid_in_a_row >= MAX_INVALID:
            raise Hm3Error(
                f"{MAX_INVALID} trials in a row drew values that cannot merge (the last, trial "
                f"{trial.number}: {reason}); narrow the search: ranges so that every value merges"
            )
        drawn = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())  # fmt: skip
        log.warning("trial %d (%s) skipped, not counted: %s", trial.number, drawn, reason)
        return False

    def _score(self, logits: np.ndarray, stage: int) -> tuple[float, dict[str, Any]]:
        if self.objective_kind == "f1":
            assert self.val is not None
            per_task, avg = f1_scores(self.val, logits, self.scored, stage)
            return avg, {"val": per_task, "val_average": avg}
        assert self.unlabelled is not None
        agree, similar = agreement_scores(self.unlabelled, logits, self.scored, stage)
        mean_agree = float(np.mean(list(agree.values())))
        attrs = {
            "agreement": agree,
            "agreement_average": mean_agree,
            "similarity": similar,
            "similarity_average": float(np.mean(list(similar.values()))),
        }
        return mean_agree, attrs

    @staticmethod
    def _store(trial: Any, attrs: dict[str, Any], started: float) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))


class _SkippedTrial(logging.Filter):
    """Drops Optuna's "Trial N failed …" lines (a traceback among them) about the trial the
    objective skipped: its one warning line has said why."""

    number: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        skipped = self.number is not None
        return not (skipped and record.getMessage().startswith(f"Trial {self.number} failed"))


_SKIPPED = _SkippedTrial()


def _quiet_optuna() -> _SkippedTrial:
    """The filter on the logger of Optuna's trial loop, added once."""
    logger = logging.getLogger("optuna.study._optimize")
    if _SKIPPED not in logger.filters:
        logger.addFilter(_SKIPPED)
    return _SKIPPED


def _best_so_far(trial: Any) -> float:
    """The best objective value of the study's complete trials (``-inf`` when none)."""
    from optuna.trial import TrialState

    study = trial.study
    values = [
        t.value
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]
    return max(values, default=-np.inf)
