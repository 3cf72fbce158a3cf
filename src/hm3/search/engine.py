"""The in-memory merge of a search: inputs read once, each trial written into one live model.

:class:`Engine` opens the merge's inputs with :func:`hm3.merging.plan.build_plan` (the same
checks as ``hm3 merge``), reads every tensor of the base and the HM3-expanded models once onto
the device (:class:`MemoryPlan`), and builds one live ``transformers`` classifier of the merged
layout (config and tokenizer only; no weights written). :meth:`Engine.apply` merges a trial's
config tensor by tensor with :func:`hm3.merging.stream.merge_tensor` — the very function
``hm3 merge`` streams to disk, so the methods of :mod:`hm3.methods` run on the same inputs with
the same seeds — casts each to the recipe's dtype and copies it into the live model's parameter
(which is float32 unless the search scores in another dtype: ``--dtype``).
With an ``align:`` block the body is then scaled (:class:`hm3.alignment.scale.BodyScale`) and the
heads are re-fitted to the originals' logits (computed once) by
:class:`hm3.alignment.fit.RidgeStats`, as ``hm3 align`` does. It scores nothing
(:mod:`hm3.search.data`) and writes no checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from hm3.alignment.fit import RidgeStats, stitch
from hm3.alignment.originals import resolve_originals
from hm3.alignment.result import by_path
from hm3.alignment.scale import BodyScale
from hm3.errors import Hm3Error
from hm3.io.atomic import scratch_dir
from hm3.io.texts import TextCount, iter_text_batches, open_texts
from hm3.io.tokenizer import copy_tokenizer, has_tokenizer
from hm3.merging.config import MergeConfig
from hm3.merging.plan import MergePlan, TensorPlan, build_plan
from hm3.merging.stream import arithmetic_threads, constant_value, merge_tensor, write_config
from hm3.model.classifier import Classifier
from hm3.model.features import Projection, load_originals, original_logits
from hm3.model.labels import Task
from hm3.options import RunOptions, torch_dtype
from hm3.recipe import check_align_tasks


class MemoryPlan(MergePlan):
    """A :class:`MergePlan` whose inputs were read once and are served from memory."""

    cache: dict[str, tuple[torch.Tensor | None, torch.Tensor]]

    def inputs(
        self,
        tp: TensorPlan,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        with_base: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        base, stacked = self.cache[tp.name]
        return (base if with_base else None), stacked.clone()  # the method may overwrite it


def memory_plan(plan: MergePlan, device: torch.device) -> MemoryPlan:
    """Read every non-constant tensor of ``plan`` onto ``device`` (float32)."""
    out = MemoryPlan(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)})
    out.cache = {}
    for tp in plan.tensors:
        if tp.kind != "constant":
            out.cache[tp.name] = MergePlan.inputs(plan, tp, device)
    return out


class Engine:
    """The search's merged model: one live classifier rewritten by every trial."""

    def __init__(self, config: MergeConfig, options: RunOptions) -> None:
        self.options = options
        self.device = torch.device(options.device)
        plan = build_plan(config, allow_pickle=options.allow_pickle, idle=False)
        try:
            self.plan = memory_plan(plan, self.device)
            self.clf, self.positions = _live_model(plan, self.device, options)
        finally:
            plan.close()
        self.tasks = plan.tasks
        self.params = self.clf.model.state_dict(keep_vars=True)
        missing = [tp.name for tp in plan.tensors if tp.name not in self.params]
        if missing:
            raise Hm3Error(
                f"{plan.models[0].label}: tensor {missing[0]} has no parameter in the "
                f"{type(self.clf.model).__name__} built from its config; search supports "
                "checkpoints saved by transformers' save_pretrained"
            )
        with torch.no_grad():
            for tp in plan.tensors:
                if tp.kind == "constant":
                    self.params[tp.name].copy_(constant_value(plan, tp))
        weight, bias = plan.arch.projection_weight, plan.arch.projection_bias
        self.projection = Projection(weight.rpartition(".")[0], weight, bias)
        self.alignment: Alignment | None = None

    def apply(self, config: MergeConfig) -> None:
        """Merge ``config`` into the live model (and align it, if the engine aligns)."""
        self.plan.config = config
        dtype = torch_dtype(config.dtype)
        body: dict[str, torch.Tensor] = {}
        with arithmetic_threads(self.device), torch.no_grad():
            for tp in self.plan.tensors:
                if tp.kind == "constant":
                    continue
                value = merge_tensor(self.plan, tp, self.device).to(dtype)
                self.params[tp.name].copy_(value)
                if tp.kind == "body":
                    body[tp.name] = self.params[tp.name]
        if self.alignment is not None and config.align is not None:
            self.alignment.fold(self, config, body)

    def prepare_alignment(self, config: MergeConfig, texts: str | Path | dict[str, str]) -> None:
        """Compute the originals' logits on the alignment texts, once."""
        self.alignment = Alignment(self, config, texts)


class Alignment:
    """The alignment texts, tokenised once, and the originals' logits on them: one set of
    batches per text file (``align.texts``: one for every head, or each task's own), in the
    order ``hm3 align`` reads them."""

    def __init__(
        self, engine: Engine, config: MergeConfig, texts: str | Path | dict[str, str]
    ) -> None:
        spec = config.align
        assert spec is not None and spec.scale != "auto"  # refused by inputs.check_recipe
        names = [t.name for t in engine.tasks]
        if not isinstance(texts, dict):
            files = [(Path(texts), "align.texts", list(engine.tasks))]
        else:
            check_align_tasks(config, names)
            by_file = by_path({t.name: Path(texts[t.name]) for t in engine.tasks}, engine.tasks)
            files = [(path, f"align.texts.{tasks[0].name}", tasks) for path, tasks in by_file]
        originals = resolve_originals(engine.tasks, None, files[0][0])
        opts = engine.options
        # the fitting targets in float32, whatever dtype the trials are scored in
        runners = load_originals(originals, opts.with_(max_length=spec.max_length, dtype=None))
        self.sets = [self._batches(engine, spec, originals, runners, file) for file in files]
        del runners
        self.groups = [(t.start, t.end) for t in engine.tasks]

    @staticmethod
    def _batches(
        engine: Engine, spec: Any, originals: Any, runners: Any, file: tuple[Path, str, list]
    ) -> tuple[list[Task], list[tuple[Any, torch.Tensor]]]:
        path, option, tasks = file
        texts = open_texts(path, spec.text_column, options=(option, "align.text_column"))
        fitted = {t.name for t in tasks}
        batches = []
        with torch.inference_mode():
            for batch in iter_text_batches(texts, engine.options.batch_size, spec.max_texts,
                                           TextCount()):  # fmt: skip
                y = original_logits(engine.tasks, originals, runners, batch, only=fitted)
                enc = engine.clf.tokenizer(
                    list(batch), padding=True, truncation=True,
                    max_length=min(spec.max_length, engine.positions),
                    return_tensors="pt",
                ).to(engine.device)  # fmt: skip
                batches.append((enc, y))
        if not batches:
            raise Hm3Error(f"{option} {path}: no texts; give a file of unlabeled texts")
        y = torch.cat([y for _, y in batches])
        if not bool((y.amax(dim=0) > y.amin(dim=0)).any()):  # hm3 align refuses them too
            raise Hm3Error(
                f"{option} {path}: its {len(y)} text(s) all give the originals the same logits, "
                "so they cannot tell a head what to change; give a few hundred different texts "
                "that cover its tasks' domains"
            )
        return tasks, batches

    def fold(self, engine: Engine, config: MergeConfig, body: dict[str, torch.Tensor]) -> None:
        """Scale the body, fit every task's head rows to its original on its texts, write
        them in."""
        spec = config.align
        assert spec is not None
        scale = float(spec.scale)
        if scale != 1:
            base = {n: engine.plan.cache[n][0] for n in body}
            delta = {n: body[n].detach().float() - base[n] for n in body}  # type: ignore[operator]
            BodyScale(config.base_model, base, delta).apply(engine.clf.model, scale)  # type: ignore[arg-type]
        module = engine.clf.model.get_submodule(engine.projection.module)
        intercept = module.bias is not None
        fits = [RidgeStats(module.weight.shape[1], engine.tasks[-1].end) for _ in self.sets]
        captured: list[torch.Tensor] = []
        handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            with torch.inference_mode():
                for stats, (_, batches) in zip(fits, self.sets, strict=True):
                    for enc, y in batches:
                        captured.clear()
                        engine.clf.model(**enc)
                        stats.add(captured[0].float().cpu(), y)
        finally:
            handle.remove()
        pieces = []
        for stats, (tasks, _) in zip(fits, self.sets, strict=True):
            solution = stats.solve_for(spec.ridge, self.groups, intercept=intercept)
            pieces += [(solution, (t.start, t.end)) for t in tasks]
        solution = pieces[0][0] if len(self.sets) == 1 else stitch(pieces)
        with torch.no_grad():
            module.weight.copy_(solution.weight.to(module.weight.dtype))
            if module.bias is not None:
                module.bias.copy_(solution.bias.to(module.bias.dtype))


def _live_model(
    plan: MergePlan, device: torch.device, options: RunOptions
) -> tuple[Classifier, int]:
    """A classifier of the merged layout in the scoring dtype (``options.dtype``), built from
    its config (weights come from trials), and the most tokens it reads."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = next((c.path for c in (plan.base, *plan.models) if has_tokenizer(c.path)), None)
    if source is None:
        raise Hm3Error(
            f"{plan.models[0].label}: no tokenizer files in the base or the models; search "
            "scores texts, so copy them into a model directory"
        )
    with scratch_dir("hm3-search-") as tmp:
        config = write_config(plan, tmp, "float32", merged=True)
        copy_tokenizer(source, tmp)
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)
    max_length = options.max_length
    positions = int(config.get("max_position_embeddings") or max_length)
    if config.get("model_type") in ("roberta", "xlm-roberta"):
        positions -= 2  # positions are offset by padding_idx + 1
    model = model.eval().to(device=device, dtype=torch_dtype(options.dtype))
    clf = Classifier(model, tokenizer, plan.tasks, plan.model_dirs[0], min(max_length, positions))
    return clf, positions
