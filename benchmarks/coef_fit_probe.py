"""Probe: learn per-model, per-layer merge coefficients label-free, from the originals' logits.

A label-free body step tried for issue 4's goal (aligned merges at the originals' average F1),
and not kept in hm3: see benchmarks/RESULTS.md, "Where the remaining gap comes from", point 11.

What it does: the merged body is θ(λ) = θ_base + Σ_i Σ_g λ[i, g] · S_i,g, where S_i,g is model
i's share of the merge in layer group g (``--groups layer``: the embeddings, each encoder block,
the pooler; ``sublayer``: each block's attention, intermediate and output parts apart). For
``--method tsv`` the share of a weight matrix is model i's columns of Û⊥ Σ̂ V̂⊥ᵀ
(:func:`hm3.methods.tsv.singular_shares`) and of any other tensor τ_i / n, so λ = 1 is TSV-Merge
(up to the SVD's rounding, which depends on the thread count); for ``ta`` it is the task vector
τ_i itself, and λ = 1/n is the soup. λ is learned as AdaMerging (Yang et al. 2024, arXiv
2310.02575) learns layer-wise coefficients, with one change: AdaMerging minimises the merged
model's prediction entropy; here the loss is what alignment leaves over, the aligned heads'
squared error against each original's logits (each task's error divided by the variance of its
original's logits; ``--loss kl``: the KL divergence from each original's softmax to the aligned
head's, which weighs the texts near a decision). It alternates: every epoch the heads are
refitted in closed form on the current body, exactly as ``hm3 align`` fits them (ridge 0.03),
then one pass of Adam over mini-batches moves λ with the heads held. No labels: the fitting
texts are the ablation's ``all 1000`` set (train-split texts of the four tasks).

Then the body with the learned λ is aligned on the same texts and scored on the case's tasks
of the whole suite, like every merge of the ablation. It prints, per case: the plain merge and
the fitted one, merged → aligned at ``--ridges``, the in-sample residual per epoch and λ.
BERT-family encoders only (the demo's MiniLM): the groups above are named after BERT's layers.

Usage::

    python benchmarks/coef_fit_probe.py --groups sublayer --epochs 6 --lr 0.03
    python benchmarks/coef_fit_probe.py --cases all4 --method ta --epochs 3
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from align_ablation import (
    MAX_LENGTH,
    _method_specs,
    _picked,
    draw,
    limited,
    load_datasets,
    shuffled_pools,
    write_set,
)
from body_fit_probe import _print_case, evaluate_merge, write_results
from safetensors.torch import load_file, save_file
from torch.func import functional_call
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from hm3.alignment.fit import RidgeStats
from hm3.defaults import FIXED_RIDGE
from hm3.demo.cases import CASES, merge_config, train_zoo
from hm3.demo.data.prepare import TASKS, prepare_data
from hm3.demo.sources.fetch import base_model_dir
from hm3.methods.tsv import singular_shares
from hm3.recipe import merge

WORKDIR = Path(tempfile.gettempdir()) / "hm3-coef-fit"
PREFIX = "bert."  # the body's parameters inside BertForSequenceClassification


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--cases", default=",".join(c.name for c in CASES), help="comma list of case studies")
    add("--method", default="tsv", choices=("tsv", "ta"), help="whose shares (default tsv)")
    add("--groups", default="sublayer", choices=("layer", "sublayer"), help="default sublayer")
    add("--epochs", type=int, default=6, help="passes over the texts (default 6)")
    add("--lr", type=float, default=0.03, help="Adam's step size for λ (default 0.03)")
    add("--loss", default="mse", choices=("mse", "kl"), help="what λ minimises (default mse)")
    add("--batch", type=int, default=32, help="texts per step (default 32)")
    add("--texts", type=int, default=1000, help="fitting texts, all four tasks (default 1000)")
    add("--ridges", default="0.01,0.03,0.1", help="alignment ridges (default 0.01,0.03,0.1)")
    add("--workdir", type=Path, default=WORKDIR, help=f"merges, texts, JSON (default {WORKDIR})")
    return parser.parse_args()


def group_of(name: str, how: str) -> str:
    """The layer group of a body parameter (module docstring)."""
    m = re.match(r"encoder\.layer\.(\d+)\.(attention|intermediate|output)", name)
    if m:
        return f"layer{m.group(1)}" + (f".{m.group(2)}" if how == "sublayer" else "")
    return name.split(".")[0]  # embeddings, pooler


def shares(base: dict, originals: list[dict], method: str) -> dict[str, torch.Tensor]:
    """Each model's share S_i of every float body tensor, stacked as [n, *shape]."""
    out = {}
    n = len(originals)
    for name, b in base.items():
        taus = torch.stack([o[name].float() - b.float() for o in originals])
        if method == "tsv" and taus.ndim == 3:
            out[name] = singular_shares(taus, torch.ones(n))
        else:
            out[name] = taus / n if method == "tsv" else taus
    return out


@dataclass
class Coefficients:
    """θ(λ) = θ_base + Σ_i λ[i, group] · S_i, differentiable in λ."""

    base: dict[str, torch.Tensor]
    shares: dict[str, torch.Tensor]
    group: dict[str, int]
    lam: torch.Tensor  # [n, groups], requires grad

    def params(self) -> dict[str, torch.Tensor]:
        return {
            k: b + torch.tensordot(self.lam[:, self.group[k]], self.shares[k], dims=1)
            for k, b in self.base.items()
        }


class Texts:
    """The fitting texts, tokenised per batch; ``order`` groups texts of similar length."""

    def __init__(self, tokenizer, texts: list[str]) -> None:
        self.tokenizer, self.texts = tokenizer, texts
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        self.batches = [order[i : i + 64] for i in range(0, len(order), 64)]
        self.encoded = [self.encode(b) for b in self.batches]

    def encode(self, rows: list[int]) -> dict:
        return dict(
            self.tokenizer(
                [self.texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
        )

    @torch.no_grad()
    def logits(self, model) -> torch.Tensor:
        y = torch.empty(len(self.texts), model.config.num_labels)
        for rows, enc in zip(self.batches, self.encoded, strict=True):
            y[rows] = model(**enc).logits
        return y

    @torch.no_grad()
    def pooled(self, body, params) -> torch.Tensor:
        x = torch.empty(len(self.texts), body.config.hidden_size)
        for rows, enc in zip(self.batches, self.encoded, strict=True):
            x[rows] = functional_call(body, params, kwargs=enc).pooler_output
        return x


def fit_heads(x: torch.Tensor, teachers: list[torch.Tensor], scale: list[torch.Tensor]):
    """Each task's head refitted as ``hm3 align`` does, and its normalised in-sample error."""
    heads, errors = [], []
    for y, v in zip(teachers, scale, strict=True):
        stats = RidgeStats(x.shape[1], y.shape[1])
        stats.add(x, y)
        sol = stats.solve(FIXED_RIDGE)
        heads.append((sol.weight.float(), sol.bias.float()))
        errors.append(round(float(sol.sse.sum() / y.numel() / v), 4))
    return heads, errors


def learn(coef: Coefficients, body, texts: Texts, teachers: list, args) -> list[list[float]]:
    """Alternate closed-form heads and an Adam pass over λ; the residuals of every epoch."""
    scale = [y.var(0).mean() for y in teachers]
    opt = torch.optim.Adam([coef.lam], lr=args.lr)
    history = []
    for epoch in range(args.epochs + 1):
        with torch.no_grad():
            params = coef.params()
        heads, errors = fit_heads(texts.pooled(body, params), teachers, scale)
        history.append(errors)
        lam = coef.lam.detach()
        print(
            f"  epoch {epoch}: normalised residual per task {errors}; λ mean "
            f"{lam.mean():.3f} [{lam.min():.2f}, {lam.max():.2f}]",
            flush=True,
        )
        if epoch == args.epochs:
            return history
        perm = torch.randperm(len(texts.texts)).tolist()
        for start in range(0, len(perm), args.batch):
            rows = perm[start : start + args.batch]
            x = functional_call(body, coef.params(), kwargs=texts.encode(rows)).pooler_output
            loss = sum(
                _loss(x @ w.T + b, y[rows], v, args.loss)
                for (w, b), y, v in zip(heads, teachers, scale, strict=True)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    return history


def _loss(aligned: torch.Tensor, original: torch.Tensor, scale, kind: str) -> torch.Tensor:
    """``mse``: squared logit error over the logits' variance; ``kl``: KL(original ‖ aligned)."""
    if kind == "mse":
        return ((aligned - original) ** 2).mean() / scale
    p = torch.log_softmax(original, dim=1)
    return torch.nn.functional.kl_div(
        torch.log_softmax(aligned, dim=1), p, log_target=True, reduction="batchmean"
    )


def write_body(merged: Path, out: Path, params: dict[str, torch.Tensor]) -> Path:
    """A copy of ``merged`` whose body tensors are ``params``."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(merged, out)
    state = load_file(str(merged / "model.safetensors"))
    for k, v in params.items():
        state[PREFIX + k] = v.detach().to(state[PREFIX + k].dtype).contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def run_case(case, spec, base_dir: Path, zoo, data, texts: Texts, covering: Path, args) -> dict:
    started = time.perf_counter()
    ridges = tuple(float(r) for r in args.ridges.split(","))
    datasets = load_datasets(limited(data.suite, None, case.tasks))
    merged = args.workdir / case.name / spec.name
    merge(merge_config(case, spec, base_dir, zoo, 0, None), merged, force=True, progress=False)
    rows = {spec.name: evaluate_merge(merged, datasets, covering, ridges)}
    body = AutoModel.from_pretrained(base_dir).eval()
    base = {k: v.detach().clone() for k, v in body.named_parameters()}
    originals, teachers = [], []
    for task in case.tasks:
        model = AutoModelForSequenceClassification.from_pretrained(zoo[task].path).eval()
        params = dict(model.named_parameters())
        originals.append({k: params[PREFIX + k].detach() for k in base})
        teachers.append(texts.logits(model))
    groups = sorted({group_of(k, args.groups) for k in base})
    n = len(case.tasks)
    coef = Coefficients(
        base,
        shares(base, originals, args.method),
        {k: groups.index(group_of(k, args.groups)) for k in base},
        torch.full((n, len(groups)), 1.0 if args.method == "tsv" else 1.0 / n, requires_grad=True),
    )
    if args.method == "tsv":  # λ = 1 must be hm3's own TSV-Merge
        with torch.no_grad():
            state, start = load_file(str(merged / "model.safetensors")), coef.params()
        diff = max(float((start[k] - state[PREFIX + k].float()).abs().max()) for k in base)
        print(f"  {case.name}: max |θ(λ = 1) − hm3's tsv| = {diff:.1e}", flush=True)
    history = learn(coef, body, texts, teachers, args)
    fitted = write_body(merged, args.workdir / case.name / "fitted", coef.params())
    label = (
        f"{spec.name} + coefficients ({args.groups}, {args.loss}, {args.epochs} epochs, "
        f"lr {args.lr:g})"
    )
    rows[label] = evaluate_merge(fitted, datasets, covering, ridges)
    rows[label]["residuals"] = history
    rows[label]["lambda"] = {
        t: dict(zip(groups, coef.lam[i].tolist(), strict=True)) for i, t in enumerate(case.tasks)
    }
    rows[label]["seconds"] = round(time.perf_counter() - started, 1)
    _print_case(case, rows, ridges)
    return rows


def fitting_setup(n_texts: int, workdir: Path):
    """The demo zoo (trained or cached) and the ablation's ``all`` set of ``n_texts`` texts."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    base_dir = base_model_dir(None)
    data = prepare_data(None, seed=0)
    zoo = train_zoo(base_dir, data, None, seed=0, progress=False)
    fitting = draw(shuffled_pools(data, 0), list(TASKS), n_texts)
    covering = write_set(workdir / "texts", "all", fitting, f"all {n_texts}", "all")
    texts = Texts(AutoTokenizer.from_pretrained(base_dir), fitting)
    return base_dir, data, zoo, covering.path, texts


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    started = time.perf_counter()
    base_dir, data, zoo, covering, texts = fitting_setup(args.texts, args.workdir)
    (spec,) = _method_specs("tsv" if args.method == "tsv" else "soup")
    results = {
        case.name: run_case(case, spec, base_dir, zoo, data, texts, covering, args)
        for case in _picked(args.cases, CASES, "cases")
    }
    write_results(args.workdir / "coef_fit.json", results, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
