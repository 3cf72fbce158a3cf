"""Run a whole merge recipe: merge the models, then align the heads if the recipe asks for it.

This is what ``hm3 merge`` and :func:`hm3.merge` do. Without an ``align:`` block it is the
streaming merge of :mod:`hm3.merging.stream`. With one, the merged checkpoint is written to a
scratch directory beside ``out`` and :func:`hm3.alignment.api.align` writes the aligned model to
``out``, so ``out`` appears once, complete, or not at all; the scratch directory is always
removed. The originals are the merged models themselves (each task's recorded ``source``), and
relative text paths are resolved against the YAML file's directory, like model paths.
``merge_method: regmean`` first runs every model over its own texts
(:func:`hm3.merging.regmean_stats.collect`) and hands the Gram statistics to the merge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hm3.alignment.api import align
from hm3.alignment.result import AlignResult
from hm3.alignment.texts import task_files_problem
from hm3.errors import Hm3Error
from hm3.io.atomic import check_output, sibling_scratch
from hm3.io.checkpoint import locate
from hm3.io.paths import as_path
from hm3.io.texts import TextFile, open_texts
from hm3.merging.config import AlignConfig, MergeConfig, RegMeanConfig
from hm3.merging.inputs import config_inputs
from hm3.merging.plan import build_plan, task_names
from hm3.merging.regmean_stats import ModelTexts
from hm3.merging.regmean_stats import collect as collect_grams
from hm3.merging.stream import MergeResult
from hm3.merging.stream import merge as merge_weights
from hm3.options import RunOptions, run_options


@dataclass(frozen=True)
class RecipeResult(MergeResult):
    """A :class:`~hm3.merging.stream.MergeResult`, plus the alignment when the recipe had one."""

    alignment: AlignResult | None = None
    regmean: dict[str, Any] | None = None  # what RegMean's statistics were computed on


_UNREAD = {"max_length": "set max_length in the config's align: or regmean: block"}


def merge(
    config: MergeConfig, out: str | Path, *, options: RunOptions | None = None, **run: Any
) -> RecipeResult:
    """Merge the models of ``config`` into ``out``; align the heads if ``config.align`` is set.

    Args:
        config: a validated merge config (:meth:`MergeConfig.from_yaml`).
        out: output directory; must not exist unless ``options.force``.
        options: the run options (:class:`~hm3.options.RunOptions`): ``device`` (for merging
            and aligning; CPU unless asked), ``dtype`` (output dtype, overriding
            ``config.dtype``), ``force`` (replace ``out`` once the new model is complete),
            ``allow_pickle``, ``progress``, and ``batch_size`` (texts per forward pass while
            aligning and collecting RegMean's Gram matrices). ``max_length`` is not read (so
            refused as a keyword): the ``align`` and ``regmean`` blocks of ``config`` set it.
        **run: run options by name, overriding ``options`` (``hm3.merge(cfg, out,
            progress=False)``).

    Returns:
        A :class:`RecipeResult`: the merged (and aligned) model's path, tasks and timings.

    Raises:
        Hm3Error: ``config`` that is no :class:`MergeConfig` (a dict or a path), a bad run
            option, or any refusal of the merge or the alignment.
    """
    if not isinstance(config, MergeConfig):
        raise Hm3Error(
            f"config: expected a hm3.MergeConfig, got {type(config).__name__}; build it with "
            "MergeConfig.from_yaml(path) or MergeConfig.from_dict(data)"
        )
    opts = run_options(options, run, unread=_UNREAD).resolved()  # a bad device fails first
    out = as_path(out, "out")
    started = time.perf_counter()
    # texts are checked before any model runs, so a wrong path or column fails in seconds,
    # named as in the YAML
    gram_texts = _regmean_texts(config)
    texts = _align_texts(config) if config.align is not None else None
    check_output(out, opts.force, inputs=config_inputs(config))
    spec = config.align
    if spec is None or texts is None:
        result, record = _merge(config, out, opts, gram_texts)
        seconds = time.perf_counter() - started
        return RecipeResult(**{**vars(result), "seconds": seconds}, regmean=record)
    return _merge_then_align(config, spec, texts, out, opts, gram_texts, started)


def _merge_then_align(
    config: MergeConfig,
    spec: AlignConfig,
    texts: TextFile | dict[str, TextFile],
    out: Path,
    opts: RunOptions,
    gram_texts: list[ModelTexts] | None,
    started: float,
) -> RecipeResult:
    """Merge into a scratch directory beside ``out``, then align from it into ``out``.

    The scratch directory is always removed; on failure so are the parents made for ``out``.
    """
    with sibling_scratch(out, f".{out.name}.merge-") as scratch:  # a bad path: one line
        merged, record = _merge(config, scratch / "merged", opts.with_(force=False), gram_texts)
        aligned = align(
            merged.path,
            texts,
            out,
            ridge=spec.ridge,
            scale=spec.scale,
            base_model=config.resolve(config.base_model),
            max_texts=spec.max_texts,
            options=opts.with_(max_length=spec.max_length),
        )
    base = replace(merged, path=out, seconds=time.perf_counter() - started)
    return RecipeResult(**vars(base), alignment=aligned, regmean=record)


def _merge(
    config: MergeConfig, target: Path, options: RunOptions, gram_texts: list[ModelTexts] | None
) -> tuple[MergeResult, dict[str, Any] | None]:
    """The streaming merge into ``target``, after RegMean's statistics when it needs them."""
    stats = None
    if gram_texts is not None:
        build_plan(config, allow_pickle=options.allow_pickle).close()  # checkpoints, in seconds
        gram_spec = config.regmean or RegMeanConfig()
        stats = collect_grams(
            gram_texts,
            options.with_(max_length=gram_spec.max_length),
            max_texts=gram_spec.max_texts,
        )
    merged = merge_weights(config, target, regmean=stats, options=options)
    return merged, (stats.record() if stats is not None else None)


def _regmean_texts(config: MergeConfig) -> list[ModelTexts] | None:
    """Each model's checked text file for ``merge_method: regmean`` (else ``None``)."""
    if config.merge_method != "regmean":
        return None
    spec = config.regmean or RegMeanConfig()
    column = spec.text_column
    found = []
    for i, (entry, params) in enumerate(zip(config.models, config.model_params(), strict=True)):
        option = f"models[{i}].texts" if entry.texts else "regmean.texts"
        given = entry.texts or spec.texts
        if given is None:  # MergeConfig refuses this; kept for configs built without it
            raise Hm3Error(f"models[{i}]: regmean needs texts; set {option}")
        path = _texts_path(config, given, option)
        found.append(
            ModelTexts(
                entry.name or Path(entry.model.rstrip("/")).name,
                str(locate(config.resolve(entry.model), f"models[{i}]")),
                params.weight,
                open_texts(path, column, options=(option, "regmean.text_column")),
            )
        )
    return found


def _align_texts(config: MergeConfig) -> TextFile | dict[str, TextFile]:
    """``align.texts`` opened: one file for every head, or each task's own (every task named)."""
    spec = config.align
    assert spec is not None

    def opened(texts: str, option: str) -> TextFile:
        path = _texts_path(config, texts, option)
        return open_texts(path, spec.text_column, options=(option, "align.text_column"))

    if isinstance(spec.texts, str):
        return opened(spec.texts, "align.texts")
    check_align_tasks(config)
    return {task: opened(path, f"align.texts.{task}") for task, path in spec.texts.items()}


def check_align_tasks(config: MergeConfig, names: list[str] | None = None) -> None:
    """``align.texts`` given per task names every task of the merge once: ``names``, or those
    the merge will give the config's models."""
    spec = config.align
    if spec is None or isinstance(spec.texts, str):
        return
    if names is None:
        models = config.models
        names = task_names([(m.name, m.model, Path(config.resolve(m.model))) for m in models])
    problem = task_files_problem(spec.texts, names)
    if problem is not None:
        raise Hm3Error(f"align.texts: {problem} (its tasks: {', '.join(names)}); give TASK: FILE "
                       "for every task, or one file for every head")  # fmt: skip


def _texts_path(config: MergeConfig, texts: str, option: str) -> Path:
    path = Path(config.resolve(texts)).expanduser()
    if not path.is_file():
        where = f" (relative to {config.root})" if config.root and not path.is_absolute() else ""
        raise Hm3Error(
            f"{option}: file {texts} not found{where}; give a .jsonl, .csv, .tsv or "
            ".parquet file of unlabeled texts"
        )
    return path
