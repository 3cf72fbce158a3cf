"""Merge N HM3-expanded classifiers into one checkpoint, streaming one tensor at a time.

For each output tensor, the models' values (and the base's) are loaded, HM3-expanded if it is
the label projection, merged by the configured method from :mod:`hm3.methods`, cast to the
output dtype and appended to ``model.safetensors``. Peak memory is about the largest tensor
times the number of models, whatever the model size. The output directory is built in a
temporary sibling and renamed into place when complete (:mod:`hm3.io.atomic`).

It does not evaluate or align the merged model (see ``evaluation.py`` and ``alignment.py``);
:func:`hm3.merge` (:mod:`hm3.recipe`) runs a whole recipe, alignment included.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hm3.errors import Hm3Error
from hm3.io.atomic import atomic_dir, check_output
from hm3.io.safetensors_writer import SafetensorsWriter
from hm3.io.tokenizer import copy_tokenizer, has_tokenizer
from hm3.merging.card import render_card
from hm3.merging.config import MergeConfig
from hm3.merging.inputs import config_inputs
from hm3.merging.plan import MergePlan, TensorPlan, all_finite, build_plan
from hm3.merging.regmean_stats import RegMeanStats
from hm3.methods import METHODS, MergeOptions
from hm3.methods.regmean import DEFAULT_ALPHA
from hm3.model.labels import Task, id2label, metadata_block
from hm3.options import RunOptions, resolve_device, run_options, torch_dtype
from hm3.progress import progress_bar

log = logging.getLogger("hm3")


@dataclass(frozen=True)
class MergeResult:
    path: Path
    tasks: list[Task]
    seconds: float
    warnings: list[str] = field(default_factory=list)


def merge(
    config: MergeConfig,
    out: str | Path,
    *,
    regmean: RegMeanStats | None = None,
    options: RunOptions | None = None,
    **run: Any,
) -> MergeResult:
    """Merge the models of ``config`` into a new classifier directory ``out``.

    Args:
        config: a validated merge config.
        out: output directory; must not exist unless ``options.force``.
        regmean: ``merge_method: regmean`` only: the models' summed Gram statistics
            (:func:`hm3.merging.regmean_stats.collect`; :func:`hm3.merge` collects them).
        options: the run options (:class:`~hm3.options.RunOptions`): ``device`` (where the
            merge arithmetic runs; CPU unless asked), ``dtype`` (output dtype, overriding
            ``config.dtype``), ``force`` (replace ``out`` once the new model is complete),
            ``allow_pickle`` and ``progress``. Batch size and max length are not read.
        **run: run options by name, overriding ``options`` (``progress=False``).

    Returns:
        A :class:`MergeResult` with the output path and its tasks.
    """
    started = time.perf_counter()
    opts = run_options(options, run)
    out = Path(out)
    inputs = config_inputs(config)
    check_output(out, opts.force, inputs=inputs)
    dtype = opts.dtype or config.dtype
    out_dtype = torch_dtype(dtype)
    device = torch.device(resolve_device(opts.device))
    plan = build_plan(config, allow_pickle=opts.allow_pickle)
    try:
        _check_regmean(plan, regmean)
        check_output(out, opts.force, inputs=[*inputs, plan.base.path, *plan.model_dirs])
        with atomic_dir(out, opts.force) as tmp:
            _write_weights(
                plan, tmp / "model.safetensors", device, out_dtype, opts.progress, regmean
            )
            write_config(plan, tmp, dtype, merged=True, regmean=regmean)
            source = tokenizer_source(plan)
            if source is None:
                log.warning(
                    "no tokenizer files in the base or the models; the merged model has none"
                )
            else:
                copy_tokenizer(source, tmp)
            (tmp / "README.md").write_text(render_card(plan, dtype), encoding="utf-8")
    finally:
        plan.close()
    return MergeResult(out, plan.tasks, time.perf_counter() - started, plan.warnings)


def _check_regmean(plan: MergePlan, regmean: RegMeanStats | None) -> None:
    if (plan.config.merge_method == "regmean") != (regmean is not None):
        raise Hm3Error(
            "merge_method regmean needs the models' Gram statistics and no other method takes "
            "them; merge with `hm3 merge` or hm3.merge(), which collect them from the texts"
        )
    kinds = {tp.name: tp.kind for tp in plan.tensors}
    odd = [n for n in (regmean.sums if regmean else ()) if kinds.get(n) not in ("body", "no_base")]
    if odd:
        raise Hm3Error(
            f"regmean: statistics for {odd[0]}, which is not a body tensor of "
            f"{plan.models[0].label}; collect them from the models of this config"
        )


def _write_weights(
    plan: MergePlan,
    file: Path,
    device: torch.device,
    out_dtype: torch.dtype,
    progress: bool,
    regmean: RegMeanStats | None = None,
) -> None:
    specs = [
        (tp.name, tp.shape, out_dtype if tp.kind != "constant" else tp.dtype) for tp in plan.tensors
    ]
    with (
        SafetensorsWriter(file, specs, {"format": "pt"}) as writer,
        progress_bar(progress) as bar,
        arithmetic_threads(device),
    ):
        task = bar.add_task("merging", total=len(plan.tensors))
        for tp in plan.tensors:
            value = merge_tensor(plan, tp, device, regmean)
            writer.write(tp.name, value if tp.kind == "constant" else value.to(out_dtype))
            bar.advance(task)


@contextmanager
def arithmetic_threads(device: torch.device) -> Iterator[None]:
    """Run CPU merge arithmetic on one intra-op thread; restore the thread count afterwards.

    A merge is memory-bound and works through cache-sized chunks
    (:data:`hm3.methods.task_arithmetic.COMBINE_CHUNK`): torch's thread pool would synchronise
    on every operation, which costs more than it gains, and stalls for whole scheduler time
    slices when other processes share the cores (3x slower on a busy 2-core machine).
    """
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if device.type == "cpu":
            torch.set_num_threads(before)


def merge_tensor(
    plan: MergePlan, tp: TensorPlan, device: torch.device, regmean: RegMeanStats | None = None
) -> torch.Tensor:
    """The merged value of one tensor (float32, or the stored dtype for non-float buffers)."""
    if tp.kind == "constant":
        return constant_value(plan, tp)
    if regmean is not None and tp.name in regmean.sums:  # a linear weight: RegMean's solve
        alpha = plan.config.parameters.alpha
        solved = regmean.sums[tp.name].solve(DEFAULT_ALPHA if alpha is None else alpha, tp.name)
        return _finite(tp, solved.float()).to("cpu")
    method = METHODS[plan.config.merge_method]
    base, stacked = plan.inputs(tp, device, with_base=method.uses_base)
    if tp.kind == "no_base" and method.uses_base:  # no task vector: see MergeConfig.no_base
        base = stacked.mean(dim=0)  # the value `hm3 expand` writes as the base's
    if tp.kind == "no_base" and method.uses_base and plan.config.no_base == "mean":
        merged = base
    else:
        generators = _generators(plan, tp.name, device)
        params = plan.config.parameters
        options = MergeOptions(
            normalize=params.normalize,
            rescale=params.rescale,
            lambda_=1.0 if params.lambda_ is None else params.lambda_,
            alpha=params.alpha,
        )
        # the stacked inputs are ours: the method may reuse them as its working buffer; tsv
        # does not decompose the padded heads, whose tasks' rows cannot interfere
        merged = method.merge(
            base, stacked, plan.config.model_params(), options, generators, overwrite=True,
            decompose=tp.kind != "projection",
        )  # fmt: skip
    del base, stacked
    return _finite(tp, merged).to("cpu")


def _finite(tp: TensorPlan, merged: torch.Tensor) -> torch.Tensor:
    if not all_finite(merged):
        raise Hm3Error(
            f"merged tensor {tp.name} has NaN or Inf values; check the merge parameters "
            "(weights, lambda) of the config"
        )
    return merged


def _generators(plan: MergePlan, name: str, device: torch.device) -> list[torch.Generator]:
    gens = []
    for i in range(len(plan.models)):
        gen = torch.Generator(device=device)
        gen.manual_seed(plan.seed_for(name, i))
        gens.append(gen)
    return gens


def constant_value(plan: MergePlan, tp: TensorPlan) -> torch.Tensor:
    values = [m.get(tp.name) for m in plan.models]
    for model, value in zip(plan.models[1:], values[1:], strict=True):
        if not torch.equal(value, values[0]):
            raise Hm3Error(
                f"{model.label}: buffer {tp.name} differs from {plan.models[0].label}'s; merged "
                "models must share one architecture configuration"
            )
    return values[0]


def write_config(
    plan: MergePlan, dest: Path, dtype: str, *, merged: bool, regmean: RegMeanStats | None = None
) -> dict:
    """Write the merged (or expanded) model's ``config.json`` with ``id2label`` and ``hm3``."""
    config = {k: v for k, v in plan.models[0].config.items() if k not in ("_name_or_path", "hm3")}
    config.pop("problem_type", None)
    labels = id2label(plan.tasks)
    config["id2label"] = labels
    config["label2id"] = {v: int(k) for k, v in labels.items()}
    config["dtype"] = dtype
    config.pop("torch_dtype", None)
    used = METHODS[plan.config.merge_method].per_model_parameters
    merge_meta = {
        "method": plan.config.merge_method if merged else "none (expanded)",
        "base_model": _recorded_base(plan),
        "parameters": plan.config.parameters.model_dump(by_alias=True, exclude_none=True),
        "models": [
            {"model": m.model, **{k: v for k, v in asdict(p).items() if k in used}}
            for m, p in zip(plan.config.models, plan.config.model_params(), strict=True)
        ],
        "seed": plan.config.seed,
        "dtype": dtype,
        "no_base": plan.config.no_base,
    }
    if regmean is not None:
        merge_meta["regmean"] = regmean.record()
    config["hm3"] = metadata_block(plan.tasks, merge_meta)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


def _recorded_base(plan: MergePlan) -> str:
    """The base as ``hm3 align --scale`` will look for it: a local directory as an absolute path
    (a relative one is the YAML's, not the current directory's), a hub id as given."""
    ref = plan.config.resolve(plan.config.base_model)
    return str(Path(ref).resolve()) if Path(ref).is_dir() else ref


def tokenizer_source(plan: MergePlan) -> Path | None:
    """The first of the base and the models that has tokenizer files (``None``: none has)."""
    return next((c.path for c in (plan.base, *plan.models) if has_tokenizer(c.path)), None)
