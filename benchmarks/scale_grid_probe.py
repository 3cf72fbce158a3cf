"""Probe: choose the merge's task-vector scale label-free, by the alignment's own GCV score.

A closed-form counterpart of ``coef_fit_probe.py`` (RESULTS.md, "Where the remaining gap comes
from", point 11), tried for issue 4's goal. The merged body is θ(s) = θ_base + s · (θ_merged −
θ_base) over every body tensor (hm3's ``lambda``: s = 1 is the merge as made). For every s of a
small grid the heads are fitted in closed form on the fitting texts, as ``hm3 align --ridge
auto`` fits them, and s is scored by the sum over tasks of the lowest generalised
cross-validation score of its fit, each divided by the variance of its original's logits: an
estimate, from unlabeled texts only, of how well the aligned heads reproduce the originals on
texts like them. The s with the lowest score is "chosen"; no labels and no gradient steps.

Then s = 1 and the chosen s (``--evaluate all``: every s) are aligned with ``auto`` and scored
on the case's tasks of the whole suite, to see whether the label-free choice helps F1.
BERT-family encoders only (the demo's MiniLM).

Usage::

    HM3_CACHE=/tmp/zoo python benchmarks/scale_grid_probe.py --cases all4 --methods tsv,ties
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from align_ablation import (
    _method_specs,
    _picked,
    limited,
    load_datasets,
)
from body_fit_probe import evaluate_merge, write_results
from coef_fit_probe import PREFIX, Texts, fitting_setup, write_body
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification

from hm3.alignment.fit import AUTO_RIDGES, RidgeStats
from hm3.demo.cases import CASES, merge_config
from hm3.recipe import merge

WORKDIR = Path(tempfile.gettempdir()) / "hm3-scale-grid"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--cases", default="case1,case2,all4", help="comma list of case studies")
    add("--methods", default="tsv,ties,dare_ties", help="comma list (default tsv,ties,dare_ties)")
    add("--scales", default="0.75,1,1.25,1.5,1.75,2", help="the grid of s")
    add("--texts", type=int, default=1000, help="fitting texts, all four tasks (default 1000)")
    add("--evaluate", default="chosen", choices=("none", "chosen", "all"), help="F1 of which s")
    add("--workdir", type=Path, default=WORKDIR, help=f"merges, texts, JSON (default {WORKDIR})")
    return parser.parse_args()


def criterion(x: torch.Tensor, teachers: list[torch.Tensor]) -> tuple[float, list[float]]:
    """Sum over tasks of min-over-ridges GCV / the original's logit variance (and each term)."""
    terms = []
    for y in teachers:
        stats = RidgeStats(x.shape[1], y.shape[1])
        stats.add(x, y)
        gcv = stats.gcv([(0, y.shape[1])], AUTO_RIDGES)[0]
        terms.append(float(gcv.min()) / float(y.shape[1] * y.double().var(0).mean()))
    return sum(terms), terms


def run_merge(case, spec, base, body, teachers, texts: Texts, ctx, args) -> dict:
    merged = args.workdir / case.name / spec.name
    cfg = merge_config(case, spec, ctx["base_dir"], ctx["zoo"], 0, None)
    merge(cfg, merged, force=True, progress=False)
    state = load_file(str(merged / "model.safetensors"))
    delta = {k: state[PREFIX + k].float() - v for k, v in base.items()}
    rows = {}
    for s in (float(v) for v in args.scales.split(",")):
        params = {k: v + s * delta[k] for k, v in base.items()}
        score, terms = criterion(texts.pooled(body, params), teachers)
        rows[f"{s:g}"] = {
            "scale": s,
            "score": round(score, 5),
            "terms": [round(t, 4) for t in terms],
        }
        print(
            f"  {case.name} {spec.name} s={s:g}: score {score:.4f} {rows[f'{s:g}']['terms']}",
            flush=True,
        )
    chosen = min(rows, key=lambda k: rows[k]["score"])
    wanted = {"none": (), "chosen": {"1", chosen}, "all": rows}[args.evaluate]
    for key in wanted:
        s = rows[key]["scale"]
        path = (
            merged
            if s == 1
            else write_body(
                merged,
                args.workdir / case.name / f"{spec.name}-s{key}",
                {k: v + s * delta[k] for k, v in base.items()},
            )
        )
        rows[key] |= evaluate_merge(path, ctx["datasets"], ctx["covering"], ("auto",))
        f1 = rows[key]["aligned"]["auto"]
        print(
            f"  {case.name} {spec.name} s={key}: aligned (auto) F1 {f1['average']:.4f} "
            f"{ {t: round(v, 3) for t, v in f1['tasks'].items()} }",
            flush=True,
        )
    print(f"  {case.name} {spec.name}: chosen s = {chosen}", flush=True)
    return {"rows": rows, "chosen": chosen}


def run_case(case, ctx, texts: Texts, args) -> dict:
    body = AutoModel.from_pretrained(ctx["base_dir"]).eval()
    base = {k: v.detach().clone() for k, v in body.named_parameters()}
    teachers = []
    for task in case.tasks:
        model = AutoModelForSequenceClassification.from_pretrained(ctx["zoo"][task].path).eval()
        teachers.append(texts.logits(model))
    ctx["datasets"] = load_datasets(limited(ctx["data"].suite, None, case.tasks))
    return {
        spec.name: run_merge(case, spec, base, body, teachers, texts, ctx, args)
        for spec in _method_specs(args.methods)
    }


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    started = time.perf_counter()
    base_dir, data, zoo, covering, texts = fitting_setup(args.texts, args.workdir)
    ctx = {"base_dir": base_dir, "data": data, "zoo": zoo, "covering": covering}
    results = {
        case.name: run_case(case, ctx, texts, args) for case in _picked(args.cases, CASES, "cases")
    }
    write_results(args.workdir / "scale_grid.json", results, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
