"""``hm3 expand``: write the HM3-expanded models and base to disk, for mergekit users.

Writes ``base/`` (the base in the classifier's layout with an all-zero label projection,
Algorithm 1 line 10), ``models/<task>/`` (each model with its projection zero-padded to the
concatenated label space, line 7) and ``mergekit.yaml`` (the same recipe for
``mergekit-yaml``; ``linear`` reads no base, so its recipe names none). Body tensors the base
lacks get the models' plain mean in ``base/``: mergekit then runs the method on them with that
mean as their base, which is what ``hm3 merge`` does with ``no_base: method``; with the default
``no_base: mean`` hm3 keeps the plain mean there, and the recipe's header says which tensors
differ. One pass over the tensors, streamed like a merge.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from hm3.errors import Hm3Error
from hm3.io.atomic import atomic_dir, check_output
from hm3.io.safetensors_writer import SafetensorsWriter
from hm3.io.tokenizer import copy_tokenizer
from hm3.merging.config import MergeConfig
from hm3.merging.inputs import config_inputs
from hm3.merging.plan import MergePlan, build_plan
from hm3.merging.stream import constant_value, tokenizer_source, write_config
from hm3.methods import METHODS, ModelParams
from hm3.options import RunOptions, run_options, torch_dtype
from hm3.progress import progress_bar

log = logging.getLogger("hm3")


def expand(
    config: MergeConfig, out: str | Path, *, options: RunOptions | None = None, **run: Any
) -> Path:
    """Write the HM3-expanded inputs of ``config`` to ``out``; return ``out``.

    ``options`` (:class:`~hm3.options.RunOptions`, or its fields as keywords in ``run``):
    ``force`` replaces ``out`` once the new one is complete, ``dtype`` overrides
    ``config.dtype``, ``allow_pickle`` and ``progress``; nothing runs a model, so the device,
    batch size and max length are not read.
    """
    opts = run_options(options, run)
    out = Path(out)
    method = METHODS[config.merge_method]
    if not method.in_mergekit:
        raise Hm3Error(
            f"merge_method {method.name}: mergekit 0.1.5 has no {method.pretty_name}, so "
            "`hm3 expand` cannot write a mergekit.yaml for it; merge with `hm3 merge`, or "
            "expand with another method"
        )
    dtype = opts.dtype or config.dtype
    inputs = config_inputs(config)
    check_output(out, opts.force, inputs=inputs)
    plan = build_plan(config, allow_pickle=opts.allow_pickle)
    if config.align is not None:  # on the terminal, and in mergekit.yaml's header
        log.warning(not_carried(config)[0])
    try:
        check_output(out, opts.force, inputs=[*inputs, plan.base.path, *plan.model_dirs])
        tokenizer = tokenizer_source(plan)
        with atomic_dir(out, opts.force) as tmp:
            dirs = [tmp / "base"] + [tmp / "models" / t.name for t in plan.tasks]
            for d in dirs:
                d.mkdir(parents=True)
                write_config(plan, d, dtype, merged=False)
                if tokenizer is not None:
                    copy_tokenizer(tokenizer, d)
            files = [d / "model.safetensors" for d in dirs]
            _write_tensors(plan, files, torch_dtype(dtype), opts.progress)
            (tmp / "mergekit.yaml").write_text(
                _mergekit_yaml(plan, out.resolve(), dtype), encoding="utf-8"
            )
    finally:
        plan.close()
    return out


def _write_tensors(plan: MergePlan, files: list[Path], dtype: torch.dtype, progress: bool) -> None:
    specs = [
        (tp.name, tp.shape, dtype if tp.kind != "constant" else tp.dtype) for tp in plan.tensors
    ]
    with ExitStack() as stack:
        writers = [stack.enter_context(SafetensorsWriter(f, specs)) for f in files]
        with progress_bar(progress) as bar:
            task = bar.add_task("expanding", total=len(plan.tensors))
            for tp in plan.tensors:
                if tp.kind == "constant":
                    value = constant_value(plan, tp)
                    for writer in writers:
                        writer.write(tp.name, value)
                else:
                    base, stacked = plan.inputs(tp)
                    base = stacked.mean(dim=0) if base is None else base
                    writers[0].write(tp.name, base.to(dtype))
                    for writer, value in zip(writers[1:], stacked, strict=True):
                        writer.write(tp.name, value.to(dtype))
                bar.advance(task)


def _mergekit_yaml(plan: MergePlan, root: Path, dtype: str) -> str:
    config = plan.config
    params = config.parameters.model_dump(by_alias=True, exclude_none=True)
    names = METHODS[config.merge_method].per_model_parameters

    def used(p: ModelParams) -> dict[str, float]:
        return {k: v for k, v in asdict(p).items() if k in names}

    method = METHODS[config.merge_method]
    doc: dict = {"merge_method": config.merge_method}
    if method.uses_base:  # mergekit's linear would average the base in, and needs its weight
        doc["base_model"] = str(root / "base")
    doc["models"] = [
        {"model": str(root / "models" / task.name), "parameters": used(p)}
        for task, p in zip(plan.tasks, config.model_params(), strict=True)
    ]
    doc["dtype"] = dtype
    if params:
        doc["parameters"] = params
    return _header(plan) + yaml.safe_dump(doc, sort_keys=False)


def not_carried(config: MergeConfig) -> list[str]:
    """What of ``config`` mergekit.yaml cannot say: its ``align:`` block first (mergekit aligns
    no heads), then that mergekit draws random masks of its own."""
    notes = []
    if config.align is not None:
        notes.append(
            "the config's align: block is not in mergekit.yaml (mergekit aligns no heads); "
            "align its output: `hm3 align OUT --texts FILE --out ALIGNED`"
        )
    drawn = any(p.density < 1 for p in config.model_params())
    if METHODS[config.merge_method].is_random and drawn:
        notes.append(f"{config.merge_method} draws random masks: mergekit's are its own, not "
                     f"those of `hm3 merge` with seed {config.seed}")  # fmt: skip
    return notes


def _header(plan: MergePlan) -> str:
    lines = [
        "HM3-expanded inputs written by `hm3 expand`; run: mergekit-yaml mergekit.yaml OUT",
        "softmax each task's logit segment separately (see config.json, hm3.tasks)",
    ]
    if not METHODS[plan.config.merge_method].uses_base:
        lines.append("linear reads no base model, so base_model is left out (as hm3 does)")
    lines += not_carried(plan.config)
    missing = [tp.name for tp in plan.tensors if tp.kind == "no_base"]
    if missing and METHODS[plan.config.merge_method].uses_base:
        lines.append(
            "base/ holds the models' mean for tensors the original base lacks: "
            + ", ".join(missing)
        )
        if plan.config.no_base == "mean":
            lines.append(
                "mergekit runs the method on them with that mean as base; `hm3 merge` "
                "(no_base: mean) keeps the plain mean there: set `no_base: method` for equal output"
            )
    return "".join(f"# {line}\n" for line in lines)
