"""Probe: can a linear readout of more of a merged body's features imitate the originals better?

Head alignment refits each task's label projection on one vector per text: what that layer
receives (for BERT, the pooled output). If a merge loses F1 against its originals after
alignment, either that vector hides information the body still has (then a readout of more of
the body would do better), or the body has lost it. This probe fits, per task, the same ridge
as ``hm3 align`` (:class:`hm3.alignment.fit.RidgeStats`, relative ridge) from wider feature sets of
the merged BERT body to the original's logits on unlabeled texts, and scores each fitted
readout on a suite, as ``align_ablation.py`` scores an aligned head:

* ``pooled``: the pooler output (what alignment uses);
* ``cls`` / ``mean``: the first token's / the masked mean of the last layer's hidden states
  (``--layers all``: of every layer, side by side: 6 × 384 dims for MiniLM).

No feature set here can be written into a checkpoint (a BERT classifier reads the pooled
output only); it is a measurement of what the body holds, not an hm3 option. BERT family only.

Usage::

    python benchmarks/readout_probe.py MERGED SUITE --texts all-1000.jsonl \\
        --originals spam=ZOO/spam-… --originals sentiment=ZOO/sentiment-… [--layers all]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from align_ablation import MAX_LENGTH, distinct_texts, score

from hm3.alignment.fit import RidgeStats
from hm3.evaluation.suite import load_datasets, load_suite
from hm3.model.classifier import load
from hm3.model.labels import Task

COMBOS = (("pooled",), ("cls",), ("mean",), ("pooled", "cls"), ("pooled", "mean"))
ALL = ("pooled", "cls", "mean")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "merged",
        type=Path,
        help="the body: a merged checkpoint (not aligned), or any BERT classifier",
    )
    add("suite", type=Path, help="suite to score on (e.g. heldout_suite.py's combined.yaml)")
    add("--texts", type=Path, required=True, help="unlabeled JSONL (text column) to fit on")
    add("--originals", action="append", required=True, help="TASK=DIR, one per task")
    add("--layers", choices=("last", "all"), default="last", help="cls/mean of which layers")
    add("--ridges", default="0.01,0.03,0.1", help="comma list of relative ridges")
    add("--out", type=Path, default=None, help="write every score to this JSON file")
    return parser.parse_args(argv)


def body_features(path: Path, texts: list[str], layers: str) -> tuple[dict, torch.Tensor, list]:
    """Feature sets (name → [n, d]), logits and tasks of a BERT classifier, in text order."""
    clf = load(path, device="cpu", max_length=MAX_LENGTH)
    if not hasattr(clf.model, "bert"):
        raise SystemExit(f"{path}: readout_probe handles the BERT family only")
    parts: dict[str, list[torch.Tensor]] = {"pooled": [], "cls": [], "mean": []}
    logits = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for lo in range(0, len(order), 64):
            enc = clf.encode([texts[i] for i in order[lo : lo + 64]])
            out = clf.model.bert(**enc, output_hidden_states=True)
            states = out.hidden_states[1:] if layers == "all" else out.hidden_states[-1:]
            mask = enc["attention_mask"].unsqueeze(-1).float()
            parts["pooled"].append(out.pooler_output)
            parts["cls"].append(torch.cat([h[:, 0] for h in states], 1))
            parts["mean"].append(torch.cat([(h * mask).sum(1) / mask.sum(1) for h in states], 1))
            logits.append(clf.model.classifier(out.pooler_output))
    back = torch.as_tensor(np.argsort(order))
    feats = {k: torch.cat(v)[back] for k, v in parts.items()}
    return feats, torch.cat(logits)[back], list(clf.tasks)


def readout_tasks(originals: dict[str, Path], texts: list[str]) -> tuple[list[Task], dict]:
    """The tasks side by side (each original's labels) and each original's logits on ``texts``."""
    tasks, targets, start = [], {}, 0
    for name, path in originals.items():
        _, targets[name], (own, *rest) = body_features(path, texts, "last")
        if rest:
            raise SystemExit(f"--originals {name}={path}: expected a single-task classifier")
        tasks.append(Task(name, own.labels, start, start + own.size))
        start += own.size
    return tasks, targets


def unaligned(logits: torch.Tensor, body: list[Task], tasks: list[Task]) -> torch.Tensor | None:
    """The body's own logits laid out as ``tasks``, if it is a merge of exactly those."""
    by_name = {t.name: t for t in body}
    if any(t.name not in by_name or by_name[t.name].labels != t.labels for t in tasks):
        return None
    return torch.cat([logits[:, by_name[t.name].start : by_name[t.name].end] for t in tasks], 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    originals = {k: Path(v) for k, v in (spec.split("=", 1) for spec in args.originals)}
    with open(args.texts, encoding="utf-8") as f:
        fit_texts = [json.loads(line)["text"] for line in f if line.strip()]
    datasets = load_datasets(load_suite(args.suite).restricted(list(originals)))
    suite_texts = distinct_texts(datasets)
    fit, _, _ = body_features(args.merged, fit_texts, args.layers)
    test, body_logits, body_tasks = body_features(args.merged, suite_texts, args.layers)
    tasks, targets = readout_tasks(originals, fit_texts)
    results = {}
    own = unaligned(body_logits, body_tasks, tasks)
    if own is not None:
        results["merged, not aligned"] = score(own, tasks, datasets)
    for combo in (*COMBOS, ALL):
        x_fit = torch.cat([fit[c] for c in combo], 1)
        x_test = torch.cat([test[c] for c in combo], 1).double()
        for ridge in (float(r) for r in args.ridges.split(",")):
            logits = torch.zeros(len(suite_texts), tasks[-1].end)
            for task in tasks:
                stats = RidgeStats(x_fit.shape[1], task.end - task.start)
                stats.add(x_fit, targets[task.name])
                sol = stats.solve(ridge)
                logits[:, task.start : task.end] = (x_test @ sol.weight.T + sol.bias).float()
            results[f"{'+'.join(combo)} ({x_fit.shape[1]} dims), ridge {ridge}"] = score(
                logits, tasks, datasets
            )
    for name, s in results.items():
        per_task = ", ".join(f"{t} {v:.3f}" for t, v in s["tasks"].items())
        print(f"{name}: {s['average']:.4f} ({per_task})")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
