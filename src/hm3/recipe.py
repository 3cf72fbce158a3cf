"""Run a whole merge recipe: merge the models, then align the heads if the recipe asks for it.

This is what ``hm3 merge`` and :func:`hm3.merge` do. Without an ``align:`` block it is the
streaming merge of :mod:`hm3.merging.stream`. With one, the merged checkpoint is written to a scratch
directory beside ``out`` and :func:`hm3.alignment.api.align` writes the aligned model to ``out``, so
``out`` appears once, complete, or not at all; the scratch directory is always removed. The
originals are the merged models themselves (each task's recorded ``source``), and relative
text paths are resolved against the YAML file's directory, like model paths.
``merge_method: regmean`` first runs every model over its own texts
(:func:`hm3.merging.regmean_stats.collect`) and hands the Gram statistics to the merge.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hm3.alignment.api import AlignResult, align
from hm3.errors import Hm3Error
from hm3.io.atomic import check_output
from hm3.io.checkpoint import locate
from hm3.io.texts import open_texts
from hm3.merging.config import MergeConfig, RegMeanConfig
from hm3.merging.plan import build_plan
from hm3.merging.regmean_stats import ModelTexts
from hm3.merging.regmean_stats import collect as collect_grams
from hm3.merging.stream import MergeResult
from hm3.merging.stream import merge as merge_weights


@dataclass(frozen=True)
class RecipeResult(MergeResult):
    """A :class:`~hm3.merging.stream.MergeResult`, plus the alignment when the recipe had one."""

    alignment: AlignResult | None = None
    regmean: dict[str, Any] | None = None  # what RegMean's statistics were computed on


def merge(
    config: MergeConfig,
    out: str | Path,
    *,
    force: bool = False,
    device: str = "cpu",
    dtype: str | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
    batch_size: int = 32,
) -> RecipeResult:
    """Merge the models of ``config`` into ``out``; align the heads if ``config.align`` is set.

    Args:
        config: a validated merge config (:meth:`MergeConfig.from_yaml`).
        out: output directory; must not exist unless ``force``.
        force: replace an existing ``out`` (only once the new model is complete).
        device: where to compute (``cpu`` or ``cuda``), for merging and aligning.
        dtype: output dtype, overriding ``config.dtype``.
        allow_pickle: accept pickled ``.bin`` weights (loaded with ``weights_only=True``).
        progress: show progress bars.
        batch_size: texts per forward pass while aligning (and collecting RegMean's Gram matrices).

    Returns:
        A :class:`RecipeResult`: the merged (and aligned) model's path, tasks and timings.
    """
    out = Path(out)
    started = time.perf_counter()
    # texts are checked before any model runs, so a wrong path or column fails in seconds,
    # named as in the YAML
    gram_texts = _regmean_texts(config)
    texts = None
    if config.align is not None:
        texts = open_texts(
            _texts_path(config, config.align.texts, "align.texts"),
            config.align.text_column,
            options=("align.texts", "align.text_column"),
        )
    check_output(out, force)

    def merge_into(target: Path, force_target: bool) -> tuple[MergeResult, dict[str, Any] | None]:
        stats = None
        if gram_texts is not None:
            build_plan(config, allow_pickle=allow_pickle).close()  # checkpoints, in seconds
            gram_spec = config.regmean or RegMeanConfig()
            stats = collect_grams(
                gram_texts,
                max_texts=gram_spec.max_texts,
                max_length=gram_spec.max_length,
                batch_size=batch_size,
                device=device,
                allow_pickle=allow_pickle,
                progress=progress,
            )
        merged = merge_weights(
            config,
            target,
            force=force_target,
            device=device,
            dtype=dtype,
            allow_pickle=allow_pickle,
            progress=progress,
            regmean=stats,
        )
        return merged, (stats.record() if stats is not None else None)

    spec = config.align
    if spec is None or texts is None:
        result, record = merge_into(out, force)
        seconds = time.perf_counter() - started
        return RecipeResult(**{**vars(result), "seconds": seconds}, regmean=record)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.merge-", dir=out.parent))
    try:
        merged, record = merge_into(scratch / "merged", False)
        aligned = align(
            merged.path,
            texts,
            out,
            ridge=spec.ridge,
            scale=spec.scale,
            base_model=config.resolve(config.base_model),
            max_texts=spec.max_texts,
            batch_size=batch_size,
            max_length=spec.max_length,
            device=device,
            force=force,
            allow_pickle=allow_pickle,
            progress=progress,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = replace(merged, path=out, seconds=time.perf_counter() - started)
    return RecipeResult(**vars(base), alignment=aligned, regmean=record)


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


def _texts_path(config: MergeConfig, texts: str, option: str) -> Path:
    path = Path(config.resolve(texts)).expanduser()
    if not path.is_file():
        where = f" (relative to {config.root})" if config.root and not path.is_absolute() else ""
        raise Hm3Error(
            f"{option}: file {texts} not found{where}; give a .jsonl, .csv or "
            ".parquet file of unlabeled texts"
        )
    return path
