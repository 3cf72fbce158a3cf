"""What a search is asked for, checked before anything is written: spec, recipe, samples.

:class:`SearchSpec` holds the ``hm3 search`` options. :func:`check_spec` refuses inconsistent
ones; :func:`read_recipe` reads the merge YAML and its ``search:`` space (or builds the
``--self`` recipe); :func:`check_recipe` refuses what a merge may hold but a search cannot run
and warns when alignment reads longer texts than scoring; :func:`read_samples` draws the
seeded validation and test samples; :func:`check_out` decides whether ``--out`` may be used
(resume, join, replace with ``--force``, or new; never an input, the current directory or a
file), against :func:`search_inputs`. :mod:`hm3.search.run` runs the search on them.
"""

from __future__ import annotations

import importlib.util
import logging
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error
from hm3.evaluation.suite import load_suite
from hm3.io.atomic import check_not_cwd, check_output
from hm3.io.checkpoint import locate, read_config
from hm3.io.paths import dir_name
from hm3.io.yaml_input import load_yaml_mapping
from hm3.merging.config import MERGE_TOP, MergeConfig
from hm3.model.labels import Task
from hm3.recipe import check_align_tasks
from hm3.search import outputs
from hm3.search import study as studies
from hm3.search.data import sample_suite
from hm3.search.feasible import check_extremes
from hm3.search.space import check_space, paper_space, split_search
from hm3.search.trial import absolute_recipe

log = logging.getLogger("hm3")

OBJECTIVES = ("f1", "agreement")


@dataclass(frozen=True)
class SearchSpec:
    """What to search and how (the ``hm3 search`` options).

    Paths may be given as strings (they are made :class:`~pathlib.Path`); a number of the wrong
    type (``trials="2"``) raises :class:`~hm3.errors.Hm3Error` here, and :func:`check_spec`
    checks the values against each other.
    """

    config: Path | None = None  # merge YAML (with an optional search: block)
    self_model: str | None = None  # --self MODEL
    self_task: str | None = None  # --self TASK=MODEL (default: the directory's name)
    base: str | None = None  # --base, for --self
    suite: Path | None = None
    test_suite: Path | None = None
    trials: int = 100
    val_samples: int = 600
    test_samples: int = 1000
    sampler: str = "paper"
    seed: int = 0
    objective: str = "f1"
    texts: Path | None = None
    text_column: str = "text"
    prune: bool = False
    storage: str | None = None
    study: str = "hm3-search"
    resume: bool = False
    timeout: float | None = None  # seconds

    def __post_init__(self) -> None:
        for name in ("config", "suite", "test_suite", "texts", "self_model", "base", "storage"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str | os.PathLike):
                raise Hm3Error(f"{name} {value!r}: expected a path (str or Path), got "
                               f"{type(value).__name__}")  # fmt: skip
            # files become Paths; a model (a directory or a hub id) and a storage stay strings
            string = name in ("self_model", "base", "storage")
            object.__setattr__(self, name, os.fspath(value) if string else Path(value))
        examples = {"trials": 100, "val_samples": 600, "test_samples": 1000, "seed": 0,
                    "timeout": 3600}  # fmt: skip
        for name, example in examples.items():
            value = getattr(self, name)
            if name == "timeout" and value is None:
                continue
            kind = numbers.Real if name == "timeout" else numbers.Integral
            if isinstance(value, bool) or not isinstance(value, kind):
                what = "a number of seconds" if name == "timeout" else "a whole number"
                raise Hm3Error(f"{name} {value!r}: expected {what}, got {type(value).__name__}; "
                               f"e.g. {name}={example}")  # fmt: skip


def check_spec(spec: SearchSpec) -> None:
    if (spec.config is None) == (spec.self_model is None):
        raise Hm3Error("give a merge config (CONFIG) or --self MODEL, not both and not neither")
    for name, value in (("--trials", spec.trials), ("--val-samples", spec.val_samples),
                        ("--test-samples", spec.test_samples)):  # fmt: skip
        if value < 1:
            raise Hm3Error(f"{name} {value}: expected a whole number >= 1")
    if spec.seed < 0:  # numpy's generators take none
        raise Hm3Error(f"--seed {spec.seed}: expected a whole number >= 0")
    if spec.sampler not in studies.SAMPLERS:
        raise Hm3Error(f"--sampler {spec.sampler}: expected one of {', '.join(studies.SAMPLERS)}")
    if spec.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise Hm3Error("--sampler cmaes: needs the cmaes package; pip install cmaes, or choose "
                       "another --sampler")  # fmt: skip
    if spec.objective not in OBJECTIVES:
        raise Hm3Error(f"--objective {spec.objective}: expected f1 or agreement")
    if spec.objective == "f1" and spec.suite is None:
        raise Hm3Error("--suite: the f1 objective scores on a labelled suite; give --suite FILE "
                       "or use --objective agreement --texts FILE")  # fmt: skip
    if spec.objective == "agreement" and spec.texts is None:
        raise Hm3Error("--objective agreement: give --texts FILE (unlabeled texts to compare the "
                       "merge with the originals on)")  # fmt: skip
    if spec.texts is not None and spec.objective != "agreement":
        raise Hm3Error(f"--texts {spec.texts}: read only by --objective agreement; drop --texts "
                       "or add --objective agreement")  # fmt: skip
    if spec.texts is not None and not spec.texts.is_file():
        what = "is a directory" if spec.texts.is_dir() else "file not found"
        raise Hm3Error(f"--texts {spec.texts}: {what}; give a file of texts")
    if spec.self_task is not None and spec.self_model is None:
        raise Hm3Error(f"self_task {spec.self_task!r}: names the task of --self MODEL; give "
                       "self_model too, or drop self_task")  # fmt: skip
    if spec.base is not None and spec.self_model is None:
        raise Hm3Error(f"--base {spec.base}: read only with --self (a merge config names its "
                       "base_model); drop --base")  # fmt: skip
    if spec.storage is not None and not spec.storage.strip():
        raise Hm3Error("--storage '': empty; give a journal file path or a database URL, or drop "
                       "--storage to keep the study in --out")  # fmt: skip
    if spec.timeout is not None and not spec.timeout > 0:  # nan too
        raise Hm3Error(f"--timeout {spec.timeout:g}: expected a positive duration, e.g. 30m "
                       "or 2h")  # fmt: skip


def read_recipe(spec: SearchSpec) -> tuple[dict[str, Any], Any, str]:
    """The recipe mapping (paths absolute), its search space, and its name for messages."""
    if spec.config is not None:
        source = str(spec.config)
        data = load_yaml_mapping(spec.config, "merge config", MERGE_TOP)
        plain, space, declared = split_search(data, source)
        config = MergeConfig.from_dict(plain, source=source, root=spec.config.parent)
        space = space if declared else paper_space()  # a block replaces the paper's space
        check_space(space, config, source, declared)
        check_extremes(space, config, source, declared)
        return absolute_recipe(plain, config), space, source
    model = str(locate(spec.self_model or "", "--self"))
    base = spec.base
    if base is None:
        cfg = read_config(Path(model), model)
        base = ((cfg.get("hm3") or {}).get("merge") or {}).get("base_model") or cfg.get(
            "_name_or_path")  # fmt: skip
    if not base:
        raise Hm3Error(f"--self {spec.self_model}: its config.json names no base model; pass "
                       "--base DIR with the model it was fine-tuned from")  # fmt: skip
    name = spec.self_task or dir_name(model)  # as a merge names it: its directory
    recipe = {
        "base_model": str(locate(base, "--base").resolve()),
        "merge_method": "dare_ties",
        "models": [{"model": str(Path(model).resolve()), "name": name},
                   {"model": str(Path(model).resolve()), "name": f"{name}_copy"}],
        "seed": spec.seed,
    }  # fmt: skip
    return recipe, paper_space(), f"--self {spec.self_model}"


def check_recipe(config: MergeConfig, max_length: int) -> None:
    """What a valid merge recipe may hold but a search cannot run (checked before any model),
    and a warning when every trial's alignment reads longer texts than the scoring does."""
    if config.align is None:
        return
    check_align_tasks(config)
    if config.align.scale == "auto":
        raise Hm3Error(
            "align.scale: auto is not searched trial by trial; search the scale instead "
            "(`scale: {uniform: [0.5, 2]}`) so validation F1 chooses it"
        )
    if config.align.max_length > max_length:
        log.warning(
            "align.max_length is %d tokens, --max-length %d: every trial aligns on longer "
            "texts than it is scored on, which costs time; set align.max_length: %d to match",
            config.align.max_length, max_length, max_length,
        )  # fmt: skip


def read_samples(spec: SearchSpec, tasks: list[Task]) -> tuple[list | None, list | None]:
    """The seeded validation and test samples; the test rows are never the validation's (the
    other rows of ``--suite`` when no ``--test-suite`` is given, or when it is the same file)."""
    val = test = None
    same = spec.test_suite is not None and spec.suite is not None and (
        spec.test_suite.resolve() == spec.suite.resolve())  # fmt: skip
    if spec.suite is not None:
        suite = load_suite(spec.suite)
        val = sample_suite(suite, tasks, spec.val_samples, spec.seed)
        if spec.test_suite is None or same:
            test = sample_suite(suite, tasks, spec.test_samples, spec.seed, skip=spec.val_samples)
    if spec.test_suite is not None and not same:
        test = sample_suite(load_suite(spec.test_suite), tasks, spec.test_samples, spec.seed)
    return val, test


def search_inputs(spec: SearchSpec, config: MergeConfig) -> list[Path]:
    """Every file or directory the search reads, which ``--out`` must neither be nor hold."""
    paths = [spec.config, spec.test_suite, spec.texts, Path(config.base_model),
             *(Path(m.model) for m in config.models)]  # fmt: skip
    if config.align is not None:
        paths += [Path(file) for file in config.align.files()]
    for file in (spec.suite, spec.test_suite):
        if file is not None:
            suite = load_suite(file)
            paths += [file, *(suite.resolve(d) for d in suite.datasets)]
    if spec.storage is not None and "://" not in spec.storage:
        paths.append(Path(spec.storage))  # a shared journal
    return [p for p in paths if p is not None]


def check_out(spec: SearchSpec, out: Path, force: bool, inputs: list[Path]) -> bool:
    """Whether ``--out`` may be used: resumed, joined, made, or replaced with ``--force``.

    Refuses a file, an ``--out`` that is or holds an input, and an existing one without
    ``--force`` unless it is the study's own (``--resume``, or a shared study's worker coming
    back); with ``--force``, refuses the current directory and those above it.

    Returns:
        Whether ``--out`` is to be deleted before the run writes (only once every check passed).
    """
    # an input, or a file (existing is decided below); a --storage journal may hold --out
    check_output(out, True, inputs=inputs, allow_inside=True)
    journal = out / studies.JOURNAL
    if spec.storage is not None:
        other = outputs.foreign(out, spec.storage, spec.study)
        if other is None:
            return False
        if not force:
            raise Hm3Error(f"--out {out}: holds {other}; choose another path or pass --force "
                           "to replace it")  # fmt: skip
    elif spec.resume:
        if force:
            raise Hm3Error("--resume --force: --resume continues the study in --out, --force "
                           "deletes it to start over; pass one of them")  # fmt: skip
        if not journal.is_file():
            raise Hm3Error(f"--resume: {out} holds no study ({studies.JOURNAL}); run without "
                           "--resume to start one")  # fmt: skip
        return False
    elif not out.exists():
        return False
    elif not force:
        what = "holds a search; pass --resume to continue it, or" if journal.is_file() else \
            "already exists; choose another path or pass"  # fmt: skip
        raise Hm3Error(f"--out {out}: {what} --force to start over")
    check_not_cwd(out)  # --force would delete it
    return True
