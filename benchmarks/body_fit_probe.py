"""Probe: fit the merged body to each original's activations, layer by layer, then align the heads.

A label-free, gradient-free body step tried for issue 4's goal (aligned merges at the
originals' average F1), and not kept in hm3: see benchmarks/RESULTS.md, "Where the remaining
gap comes from", point 9.

What it does: merges each case study of the demo zoo with ``--method`` (default ``tsv``), then
walks the encoder bottom-up. For every linear layer of a block (query/key/value together, since
they share an input; then the attention output, the intermediate and the output dense) it solves,
in closed form, with X̃ = [X, 1]::

    W̃ = argmin Σ_i ‖X̃_i W̃ − Y_i‖² / m_i + ρ s ‖W̃ − W̃₀‖²,   s = trace(Σ_i X̃_iᵀX̃_i / m_i) / (d + 1)

where X_i are the merged model's inputs to that layer on model i's own texts (run through the
layers already fitted below it), Y_i original i's outputs of that layer on the same texts
(through its own layers), m_i the non-padding tokens, and W̃₀ the merge's weight and bias. The
attention output and output dense feed a residual LayerNorm; their targets also take up the
residual stream's drift (Y_i = original's LayerNorm input − the merged residual), unless
``--no-residual``. The pooler's dense layer is fitted last, on the [CLS] rows; embeddings and
LayerNorms stay as merged. Compared with hm3's RegMean, which fits W_i X_i on each original's
own inputs X_i, it feeds the merged model's inputs and targets the original's actual outputs,
so the drift of the layers below is corrected as it goes.

Then each fitted body is aligned like every merge of the ablation (``all 1000`` covering texts,
:func:`hm3.alignment.api.collect`, ridges ``--ridges``) and scored on the case's tasks of the whole
suite. It prints, per case: the merge and each fitted variant, merged → aligned, and per-task
F1 at the default ridge. BERT-family encoders only (the demo's MiniLM): the layer names above
are BERT's.

Usage::

    python benchmarks/body_fit_probe.py                       # tsv, body ridges 0.1 and 1
    python benchmarks/body_fit_probe.py --method ties --body-ridges 1 --cases all4
"""

from __future__ import annotations

import argparse
import json
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
    collect,
    distinct_texts,
    draw,
    limited,
    load_datasets,
    score,
    shuffled_pools,
    suite_features,
    sweep,
    write_set,
)
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hm3.defaults import FIXED_RIDGE
from hm3.demo.cases import CASES, merge_config, train_zoo
from hm3.demo.data.prepare import TASKS, prepare_data
from hm3.demo.sources.fetch import base_model_dir
from hm3.recipe import merge

#: the linears of a BERT block in forward order; a group shares one input
GROUPS = (
    ("attention.self.query", "attention.self.key", "attention.self.value"),
    ("attention.output.dense",),
    ("intermediate.dense",),
    ("output.dense",),
)
#: linears whose output is added to the residual stream before this LayerNorm
RESIDUAL = {
    "attention.output.dense": "attention.output.LayerNorm",
    "output.dense": "output.LayerNorm",
}
WORKDIR = Path(tempfile.gettempdir()) / "hm3-body-fit"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--cases", default=",".join(c.name for c in CASES), help="comma list of case studies")
    add("--method", default="tsv", help="the merge to start from, METHOD[:VALUE] (default tsv)")
    add("--body-ridges", default="0.1,1", help="comma list of ρ, relative to s (default 0.1,1)")
    add("--texts", type=int, default=250, help="each model's own train texts (default 250)")
    add("--no-residual", action="store_true", help="targets: the originals' layer outputs only")
    add("--ridges", default="0.01,0.03,0.1", help="alignment ridges (default 0.01,0.03,0.1)")
    add("--workdir", type=Path, default=WORKDIR, help=f"merges, texts, JSON (default {WORKDIR})")
    return parser.parse_args()


def _load(path: Path) -> torch.nn.Module:
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
    return model.eval()


def _run_layer(layer: torch.nn.Module, hidden, additive_mask, names) -> tuple[torch.Tensor, dict]:
    """Run one block; capture the named linears' (input, output) and the residual LNs' input."""
    seen: dict = {}
    handles = []
    for name in names:
        hook = lambda _m, args, out, n=name: seen.__setitem__(n, (args[0], out))  # noqa: E731
        handles.append(layer.get_submodule(name).register_forward_hook(hook))
    for norm in RESIDUAL.values():
        pre = lambda _m, args, n=norm: seen.__setitem__(n, args[0])  # noqa: E731
        handles.append(layer.get_submodule(norm).register_forward_pre_hook(pre))
    try:
        out = layer(hidden, attention_mask=additive_mask)
    finally:
        for handle in handles:
            handle.remove()
    return (out[0] if isinstance(out, tuple) else out), seen


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


def _solve(linear: torch.nn.Linear, gram: torch.Tensor, cross: torch.Tensor, ridge: float) -> None:
    """Set ``linear`` to the ridge solution pulled towards its current weight and bias."""
    start = torch.cat([linear.weight.T, linear.bias[None]], 0).double()
    reg = ridge * torch.trace(gram) / len(gram) * torch.eye(len(gram), dtype=gram.dtype)
    fitted = torch.linalg.solve(gram + reg, cross + reg @ start)
    linear.weight.copy_(fitted[:-1].T.float())
    linear.bias.copy_(fitted[-1].float())


@dataclass
class _Paths:
    """Model i's fitting texts as tensors, and where the merged and original models have them."""

    keep: torch.Tensor  # [n, L] non-padding tokens
    additive: torch.Tensor  # [n, 1, 1, L] attention mask for eager attention
    merged: torch.Tensor  # hidden states at the current block's input, merged model
    original: torch.Tensor  # the same, through model i's own blocks


def _paths(tokenizer, merged, original, texts: list[str]) -> _Paths:
    enc = tokenizer(
        texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    mask = enc["attention_mask"]
    ids = {k: enc[k] for k in ("input_ids", "token_type_ids")}
    additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    return _Paths(
        mask.bool(), additive, merged.bert.embeddings(**ids), original.bert.embeddings(**ids)
    )


def _fit_block(index: int, layer, models: dict, paths: dict[str, _Paths], ridge, residual):
    """Fit one merged block's linears group by group, then move every path past the block."""
    every = [name for group in GROUPS for name in group]
    targets, next_original = {}, {}
    for t, path in paths.items():
        block = models[t].bert.encoder.layer[index]
        next_original[t], targets[t] = _run_layer(block, path.original, path.additive, every)
    for group in GROUPS:
        d = layer.get_submodule(group[0]).in_features + 1
        gram = torch.zeros(d, d, dtype=torch.float64)
        cross = {n: torch.zeros(d, layer.get_submodule(n).out_features).double() for n in group}
        for t, path in paths.items():
            _, seen = _run_layer(layer, path.merged, path.additive, group)
            x = _with_ones(seen[group[0]][0][path.keep])
            gram += x.T @ x / len(x)
            for name in group:
                y = targets[t][name][1]
                if residual and name in RESIDUAL:  # take up the residual stream's drift
                    norm = RESIDUAL[name]
                    y = targets[t][norm] - (seen[norm] - seen[name][1])
                cross[name] += x.T @ y[path.keep].double() / len(x)
        for name in group:
            _solve(layer.get_submodule(name), gram, cross[name], ridge)
    for t, path in paths.items():
        path.merged = _run_layer(layer, path.merged, path.additive, ())[0]
        path.original = next_original[t]


def _fit_pooler(merged, models: dict, paths: dict[str, _Paths], ridge: float) -> None:
    """The pooler's dense layer, on the [CLS] rows, to each original's (pre-tanh) output."""
    pooler = merged.bert.pooler.dense
    gram = torch.zeros(pooler.in_features + 1, pooler.in_features + 1, dtype=torch.float64)
    cross = torch.zeros(pooler.in_features + 1, pooler.out_features, dtype=torch.float64)
    for t, path in paths.items():
        x = _with_ones(path.merged[:, 0])
        gram += x.T @ x / len(x)
        cross += x.T @ models[t].bert.pooler.dense(path.original[:, 0]).double() / len(x)
    _solve(pooler, gram, cross, ridge)


@torch.inference_mode()
def fit_body(
    merged_dir: Path,
    originals: dict[str, Path],
    texts: dict[str, list[str]],
    out: Path,
    ridge: float,
    residual: bool = True,
) -> Path:
    """Write a copy of ``merged_dir`` whose encoder and pooler are fitted as the docstring says."""
    merged = _load(merged_dir)
    models = {task: _load(path) for task, path in originals.items()}
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    paths = {t: _paths(tokenizer, merged, models[t], texts[t]) for t in texts}
    for index, layer in enumerate(merged.bert.encoder.layer):
        _fit_block(index, layer, models, paths, ridge, residual)
    _fit_pooler(merged, models, paths, ridge)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(merged_dir, out)
    names = set(load_file(str(merged_dir / "model.safetensors")))
    state = {k: v.contiguous() for k, v in merged.state_dict().items() if k in names}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def evaluate_merge(path: Path, datasets, texts_file: Path, ridges) -> dict:
    """Merged and aligned average F1 on the case's suite (the ablation's fast path)."""
    feats = suite_features(path, distinct_texts(datasets), batch_size=64)
    stats = collect(
        path, texts_file, batch_size=64, max_length=MAX_LENGTH, device="cpu", progress=False
    )
    return {
        "merged": score(feats.logits, feats.tasks, datasets),
        "aligned": sweep(stats, feats, datasets, ridges),
    }


def write_results(path: Path, results: dict, started: float) -> None:
    """Write the numbers as JSON; print the time taken since ``started`` and where they went."""
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min; numbers in {path}")


def _print_case(case, rows: dict, ridges: tuple[float, ...]) -> None:
    print(f"\n{case.name}: {' + '.join(case.tasks)} (aligned at ridges {ridges})")
    for label, row in rows.items():
        aligned = " / ".join(f"{row['aligned'][str(r)]['average']:.3f}" for r in ridges)
        per = row["aligned"].get(str(FIXED_RIDGE), {}).get("tasks", {})
        tasks = ", ".join(f"{t} {f:.3f}" for t, f in per.items())
        merged = row["merged"]["average"]
        print(f"  {label}: merged {merged:.3f} → aligned {aligned}  ({tasks})", flush=True)


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    ridges = tuple(float(r) for r in args.ridges.split(","))
    body_ridges = [float(r) for r in args.body_ridges.split(",")]
    (spec,) = _method_specs(args.method)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    base = base_model_dir(None)
    data = prepare_data(None, seed=0)
    zoo = train_zoo(base, data, None, seed=0, progress=False)
    pools = shuffled_pools(data, 0)
    folder = args.workdir / "texts"
    covering = write_set(folder, "all-1000", draw(pools, list(TASKS), 1000), "all 1000", "all")
    results = {}
    for case in _picked(args.cases, CASES, "cases"):
        datasets = load_datasets(limited(data.suite, None, case.tasks))
        own = {t: pools[t][: args.texts] for t in case.tasks}
        gram = None
        if spec.method == "regmean":
            gram = {t: write_set(folder, f"own-{t}", own[t], t, t).path for t in case.tasks}
        merged = args.workdir / case.name / spec.name
        merge(merge_config(case, spec, base, zoo, 0, gram), merged, force=True, progress=False)
        rows = {spec.name: evaluate_merge(merged, datasets, covering.path, ridges)}
        for rho in body_ridges:
            t0 = time.perf_counter()
            label = f"{spec.name} + body fit ρ {rho:g}" + (" (no residual)" * args.no_residual)
            fitted = fit_body(
                merged,
                {t: zoo[t].path for t in case.tasks},
                own,
                args.workdir / case.name / f"fit-{rho:g}",
                rho,
                not args.no_residual,
            )
            rows[label] = evaluate_merge(fitted, datasets, covering.path, ridges)
            rows[label]["fit_seconds"] = round(time.perf_counter() - t0, 1)
        results[case.name] = rows
        _print_case(case, rows, ridges)
    write_results(args.workdir / "body_fit.json", results, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
