"""Table 1's fourth column, "DARE-TIES (search)": the paper's model search (Algorithm 3), small.

:func:`searched_merge` runs :func:`hm3.search.run.search` on one case's DARE-TIES recipe with
the paper's space (one density for all models from Beta(1.2, 2)), scoring each trial on the
case's validation suite (:mod:`hm3.demo.data.validation`, cut from the validation splits, so
the search never sees the rows Table 1 reports) and moves the best trial's checkpoint to where
the other merges of the case are written. The search's own test sample is a few rows of the
demo's ``suite.yaml`` per dataset: the demo evaluates the best on its own sample afterwards,
like every other column. The trial counts are small so that a cached ``hm3 demo`` stays
within minutes on 2 CPU cores; ``hm3 search`` runs the paper's 500.

It merges and scores only through :mod:`hm3.search`; it writes under the given folder only.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from hm3.demo.data.prepare import DemoData
from hm3.demo.data.validation import write_validation_suite
from hm3.merging.config import MergeConfig
from hm3.options import RunOptions
from hm3.progress import drawn

SEARCH_VAL_SAMPLES = 20  # validation rows per dataset a trial is scored on
SEARCH_TEST_SAMPLES = 5  # the search's own test sample (Table 1 scores the best afterwards)


def searched_merge(
    config: MergeConfig,
    tasks: tuple[str, ...],
    data: DemoData,
    out: Path,
    *,
    trials: int,
    seed: int,
    options: RunOptions,
) -> Path:
    """Search the DARE-TIES density of ``config`` with ``trials`` trials; the best goes to
    ``out`` (a normal hm3 checkpoint with its ``recipe.yaml``), the search's files to
    ``out`` + ``-search/`` (``trials.csv``, ``search.png``)."""
    from hm3.search.inputs import SearchSpec
    from hm3.search.run import search

    work = out.with_name(f"{out.name}-search")
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    recipe = inputs / "recipe.yaml"
    recipe.write_text(config.to_yaml(), encoding="utf-8")
    # prepare_data writes under <cache>/data/v<N>/<name>/: the cache root is three levels up
    val = write_validation_suite(data, inputs, tasks, data.root.parents[2])
    spec = SearchSpec(
        config=recipe,
        suite=val,
        test_suite=data.suite,
        trials=trials,
        val_samples=SEARCH_VAL_SAMPLES,
        test_samples=SEARCH_TEST_SAMPLES,
        seed=seed,
    )
    # a bar on a terminal; in a log, the demo's step lines and not the search's trial lines
    search(spec, work / "run", replace(options, progress=drawn(options.progress)))
    shutil.move(str(work / "run" / "best"), str(out))
    return out
