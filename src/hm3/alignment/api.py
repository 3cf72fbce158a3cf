"""Head alignment: re-fit each task's label projection rows to reproduce its original's logits.

Merging moves the shared body, while each task's head still expects its original's features.
For every task *i* of a merged model, hm3 fits ``B_i = argmin ‖X·B − Y_i‖² + λ‖B‖²`` in
closed form, where ``X`` is the merged model's input to its label projection on unlabeled
texts (plus a column of ones) and ``Y_i`` is original *i*'s logits on the same texts, and
writes ``B_i`` into rows ``[start, end)`` of the projection (weight and bias). Hidden head
layers and everything else stay as they are. The texts are streamed batch by batch: only the
sufficient statistics of the fit are kept (:mod:`hm3.alignment.fit`, which documents the choices of
an unpenalised bias and a λ relative to the feature scale). The features are captured with a
forward pre-hook on the module that owns the projection weight, so every family works alike.
With ``scale`` other than 1 the merged body's task vector is first scaled, to a given factor or
to the one whose fitted heads cross-validate best on the texts (:mod:`hm3.alignment.scale`): the
same pass runs the merged model once per scale tried.

:func:`align` is the whole step (``hm3 align``); :func:`collect` runs only the pass over the
texts and returns an :class:`AlignStats` (:mod:`hm3.alignment.result`) that solves for any λ and
folds a solution into a loaded model in memory (for demos and ablations that compare λ without
rewriting files).
The texts are one file for every head, or a file per task, each head then fitted on its own
task's texts only (one pass per file; :mod:`hm3.alignment.texts` opens and checks them); finding
and checking originals:
:mod:`hm3.alignment.originals`; writing the aligned directory: :mod:`hm3.alignment.write`.
It does not merge, and it does not evaluate on labelled data (see ``evaluation.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hm3.alignment.fit import RidgeSolution, RidgeStats
from hm3.alignment.originals import resolve_originals
from hm3.alignment.result import AlignPlan, AlignResult, AlignStats, TextFit
from hm3.alignment.scale import load_body_scale, scales_for
from hm3.alignment.texts import check_texts, opened, texts_by_task, texts_sha256
from hm3.alignment.write import render_section, write_aligned
from hm3.defaults import DEFAULT_RIDGE, DEFAULT_SCALE, ridge_or_auto, scale_or_auto
from hm3.errors import Hm3Error
from hm3.io.atomic import atomic_dir, check_output
from hm3.io.checkpoint import SAFE_INDEX, SAFE_SINGLE, read_config
from hm3.io.paths import as_path, dir_name
from hm3.io.texts import (
    TextCount,
    TextFile,
    expected_texts,
    iter_text_batches,
)
from hm3.model.classifier import load
from hm3.model.features import features, find_projection, load_originals, original_logits
from hm3.model.labels import metadata_block, tasks_from_config
from hm3.options import RunOptions, run_options, whole_number
from hm3.progress import progress_bar

__all__ = ["align", "collect"]
_UNREAD = {"dtype": "the fit runs in float32, the weights keep the merged model's dtype"}

log = logging.getLogger("hm3")


def align(
    merged_dir: str | Path,
    texts_file: str | Path | TextFile | Mapping[str, str | Path | TextFile],
    out: str | Path,
    *,
    originals: Mapping[str, str | Path] | None = None,
    ridge: float | str = DEFAULT_RIDGE,
    scale: float | str = DEFAULT_SCALE,
    base_model: str | Path | None = None,
    text_column: str = "text",
    max_texts: int | None = None,
    options: RunOptions | None = None,
    **run: Any,
) -> AlignResult:
    """Align every task head of ``merged_dir`` to its original; write the result to ``out``.

    Args:
        merged_dir: a merged classifier (or an ordinary one, with ``originals`` for its task).
        texts_file: unlabeled texts (``.jsonl``/``.csv``/``.tsv``/``.parquet``) in ``text_column``
            (or a file already checked by :func:`hm3.io.texts.open_texts`, whose column
            is then used) that every head is fitted on; or a dict task → such a file, naming
            every task: each head is fitted on its own task's texts only (on texts of other
            domains the merged body then decides; docs/results/alignment.md).
        out: output directory; must not exist unless ``options.force``.
        originals: task name → original directory, overriding the recorded ``source``.
        ridge: λ relative to the feature scale (``≥ 0``; :mod:`hm3.alignment.fit`), or
            ``"auto"``: per task, the ridge of ``AUTO_RIDGES`` with the lowest generalised
            cross-validation score on the fitting texts.
        scale: multiplies the merged body's task vector before the heads are fitted (``θ_base
            + scale·(θ_merged − θ_base)``; 1 keeps the body as merged), or ``"auto"``: the scale
            of :data:`~hm3.alignment.scale.SCALE_GRID` whose heads cross-validate best (one
            pass of the merged model per scale; with a file per task, one scale for the body,
            its score summed over the tasks). Needs the base model.
        base_model: the model the merge started from (default: the recorded
            ``hm3.merge.base_model``); only read when ``scale`` is not 1.
        text_column: the column that holds the texts.
        max_texts: use at most the first this many texts (of each file, with a file per
            task).
        options: the :class:`~hm3.options.RunOptions` (or, overriding them, their names as
            keywords: ``progress=False``): ``device`` (CPU unless asked), ``batch_size``,
            ``max_length``, ``force`` (replace ``out`` once the new one is complete),
            ``allow_pickle``, ``progress``; not ``dtype``: the fit runs in float32 and the
            aligned weights keep the merged checkpoint's dtype.

    Returns:
        An :class:`AlignResult`: path, number of texts, λ, per-task RMSE before and after.
    """
    started = time.perf_counter()
    opts = run_options(options, run, unread=_UNREAD)
    ridge, scale = ridge_or_auto(ridge), scale_or_auto(scale)
    out = as_path(out, "out")
    base_model = None if base_model is None else as_path(base_model, "base_model")
    max_texts = None if max_texts is None else whole_number(max_texts, "--max-texts")
    plan = _prepare(merged_dir, texts_file, originals, text_column)
    files = [file.path for file, _ in plan.files()]
    inputs = [plan.merged, *files, *(o.path for o in plan.originals.values())]
    check_output(out, opts.force, inputs=[*inputs, *_base_input(plan, scale, base_model)])
    stats = _accumulate(plan, opts, max_texts, scale, base_model).at_scale(scale, ridge)
    solution = stats.solve(ridge)
    digest = texts_sha256(plan)
    record = stats.record(solution, ridge, digest, max_texts)
    with atomic_dir(out, opts.force) as tmp:
        _write(stats, solution, tmp, record)
    return stats.result(out, ridge, solution, record, digest, time.perf_counter() - started)


def collect(
    merged_dir: str | Path,
    texts_file: str | Path | TextFile | Mapping[str, str | Path | TextFile],
    *,
    originals: Mapping[str, str | Path] | None = None,
    scale: float | str = DEFAULT_SCALE,
    base_model: str | Path | None = None,
    text_column: str = "text",
    max_texts: int | None = None,
    options: RunOptions | None = None,
    **run: Any,
) -> AlignStats:
    """Run the merged model and the originals over the texts; keep only the fit statistics.

    Same arguments as :func:`align` (``force`` is not read: nothing is written). Solve with
    :meth:`AlignStats.solve` for any ridge; with a ``scale`` other than 1, pick the scale first
    with :meth:`AlignStats.at_scale`.
    """
    opts = run_options(options, run, unread=_UNREAD)
    scale = scale_or_auto(scale)
    base_model = None if base_model is None else as_path(base_model, "base_model")
    max_texts = None if max_texts is None else whole_number(max_texts, "--max-texts")
    plan = _prepare(merged_dir, texts_file, originals, text_column)
    return _accumulate(plan, opts, max_texts, scale, base_model)


def _prepare(
    merged_dir: str | Path,
    texts_file: str | Path | TextFile,
    originals: Mapping[str, str | Path] | None,
    text_column: str,
) -> AlignPlan:
    """Every cheap check, before any model is loaded."""
    merged = as_path(merged_dir, "merged_dir")
    if not merged.is_dir():
        raise Hm3Error(f"{merged}: model directory not found; check the path")
    config = read_config(merged, str(merged))
    tasks = tasks_from_config(config, dir_name(merged), str(merged))
    if config.get("hm3") is None:  # an ordinary classifier records no original
        tasks = [replace(t, source="") for t in tasks]
    if not ((merged / SAFE_SINGLE).is_file() or (merged / SAFE_INDEX).is_file()):
        raise Hm3Error(
            f"{merged}: no {SAFE_SINGLE}; alignment rewrites safetensors weights, so save the "
            "model with `save_pretrained(dir, safe_serialization=True)` first"
        )
    texts: TextFile | dict[str, TextFile]
    if isinstance(texts_file, Mapping):
        texts = texts_by_task(texts_file, tasks, merged, text_column)
    else:
        texts = opened(texts_file, text_column)
    found = resolve_originals(tasks, originals, merged)
    return AlignPlan(merged, config, tasks, texts, found)


def _base_input(plan: AlignPlan, scale: float | str, base_model: str | Path | None) -> list[Path]:
    """The local base directory that a ``scale`` other than 1 reads (given or recorded)."""
    if scales_for(scale) == (1.0,):
        return []
    recorded = ((plan.config.get("hm3") or {}).get("merge") or {}).get("base_model")
    ref = base_model if base_model is not None else recorded
    return [Path(ref).expanduser()] if ref and Path(ref).expanduser().exists() else []


def _accumulate(
    plan: AlignPlan,
    options: RunOptions,
    max_texts: int | None,
    scale: float | str = DEFAULT_SCALE,
    base_model: str | Path | None = None,
) -> AlignStats:
    """One pass over the texts: the merged model (at each scale tried) and the originals."""
    load_options = options.with_(dtype=None)  # features and logits in float32
    merged = load(plan.merged, options=load_options)
    projection = find_projection(merged, plan.config, str(plan.merged))
    module = merged.model.get_submodule(projection.module)
    scales = scales_for(scale)
    body = None
    if scales != (1.0,):
        where = (plan.merged, plan.config, projection, merged.model)
        body = load_body_scale(*where, base_model, allow_pickle=options.allow_pickle)
    runners = load_originals(plan.originals, load_options)
    k, dim = plan.tasks[-1].end, module.weight.shape[1]
    files = plan.files()
    label = "aligning: texts" + (f" (body at {len(scales)} scales)" if body else "")
    fits = []
    with progress_bar(options.progress) as bar, torch.inference_mode():
        known = [expected_texts(file, max_texts) for file, _ in files]
        job = bar.add_task(label, total=None if None in known else sum(known))
        for file, tasks in files:
            fit = TextFit(file, tasks, {s: RidgeStats(dim, k) for s in scales},
                          torch.zeros(k, dtype=torch.float64), TextCount())  # fmt: skip
            fitted = {t.name for t in tasks}
            for batch in iter_text_batches(file, options.batch_size, max_texts, fit.count):
                y = original_logits(plan.tasks, plan.originals, runners, batch, only=fitted)
                for s, stats in fit.by_scale.items():
                    if body is not None:
                        body.apply(merged.model, s)
                    x, logits = features(merged, module, batch, projection)
                    stats.add(x, y)
                    if s == 1:
                        fit.sse_before += ((logits.double() - y.double()) ** 2).sum(dim=0)
                bar.advance(job, len(batch))
            check_texts(file, fit.by_scale[1.0], fit.count)
            fits.append(fit)
    return AlignStats(plan, projection, fits, body)


def _write(stats: AlignStats, solution: RidgeSolution, tmp: Path, record: dict[str, Any]) -> None:
    plan, projection = stats.plan, stats.projection
    values = {**stats.body_values(), projection.weight: solution.weight}
    if projection.bias is not None:
        values[projection.bias] = solution.bias
    block = plan.config.get("hm3")
    if block is None:  # an ordinary classifier: its one task, now with its original recorded
        used = [replace(t, source=plan.originals[t.name].ref) for t in plan.tasks]
        block = metadata_block(used, {})
    section = render_section(record, projection.tensors)
    for name in write_aligned(plan.merged, tmp, values, {**block, "align": record}, section):
        log.warning(
            "%s/%s not copied: its head would be stale next to the aligned weights",
            plan.merged,
            name,
        )
