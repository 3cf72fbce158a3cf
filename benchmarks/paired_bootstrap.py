"""Paired bootstrap of suite average F1: is one merge really better than another, or the originals?

Scores every model and each task's original on the same suite rows (average F1 as
:func:`hm3.evaluation.run.evaluate` defines it: per task, macro-F1 pooled over the datasets that
expect a label of it), then redraws the rows of every dataset with replacement ``--samples``
times (the same draws for every model and every task, so the comparison is paired) and prints,
for each pair, the difference of average F1, its 95 % percentile interval and how often it is
above 0. It first scores the first model and the originals with ``hm3.evaluation.run.evaluate``
and stops if its own scores differ.

``hm3 evaluate --bootstrap N`` gives each model's difference from the originals with the same
redraws and scores (:mod:`hm3.evaluation.bootstrap`, which this script calls); this script also compares
the models with each other, pair by pair.

It is not a test and asserts nothing. Usage (the demo zoo, three aligned merges of all4)::

    python benchmarks/paired_bootstrap.py SUITE.yaml ties=m-ties tsv=m-tsv --max-length 64 \\
        --tasks prompt_attack,toxicity,spam,sentiment \\
        --originals prompt_attack=ZOO/prompt_attack-… --originals toxicity=… …
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from hm3.evaluation.bootstrap import f1_redraws
from hm3.evaluation.run import evaluate
from hm3.evaluation.scoring import Predictions
from hm3.evaluation.suite import load_datasets, load_suite
from hm3.model.classifier import load


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    started = time.perf_counter()
    suite = load_suite(args.suite).restricted(args.tasks)
    datasets = load_datasets(suite)
    texts = list(dict.fromkeys(t for d in datasets for t in d.texts))
    models = dict(_named(spec) for spec in args.models)
    originals = dict(_named(spec) for spec in args.originals)
    missing = [t for t in args.tasks if t not in originals]
    if missing:
        sys.exit(f"--originals: none for {', '.join(missing)}; give TASK=DIR for each task")
    preds = {name: _predict(path, texts, args.max_length) for name, path in models.items()}
    preds["originals"] = {  # a single-task original: its one task, whatever it is called
        t: next(iter(_predict(originals[t], texts, args.max_length).values())) for t in args.tasks
    }
    table = _per_dataset(preds, datasets, texts, args.tasks)
    scored = {  # column -> ([task F1 on the suite], [draws, tasks] F1 on each redraw)
        name: [f1_redraws(table, datasets, name, t, args.samples, args.seed) for t in args.tasks]
        for name in preds
    }
    full = {n: np.array([f for f, _ in s]) for n, s in scored.items()}
    boot = {n: np.mean([d for _, d in s], axis=0) for n, s in scored.items()}
    _check(suite, args, models, originals, full)
    print(f"\n| model | average F1 | {' | '.join(args.tasks)} |")
    print("|---|---:|" + "---:|" * len(args.tasks))
    for n, s in full.items():
        print(f"| {n} | {s.mean():.4f} | " + " | ".join(f"{x:.3f}" for x in s) + " |")
    print(f"\npaired differences ({args.samples} bootstrap draws of every dataset's rows):\n")
    print("| a − b | difference | 95 % interval | share of draws > 0 |\n|---|---:|---|---:|")
    names = list(preds)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            d = boot[a] - boot[b]
            lo, hi = np.percentile(d, [2.5, 97.5])
            print(f"| {a} − {b} | {full[a].mean() - full[b].mean():+.4f} | "
                  f"{lo:+.4f} to {hi:+.4f} | {np.mean(d > 0):.2f} |")  # fmt: skip
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suite", type=Path, help="evaluation suite (YAML)")
    p.add_argument("models", nargs="+", help="NAME=DIR of each merged model")
    p.add_argument("--tasks", required=True, type=lambda s: s.split(","), help="TASK,TASK")
    p.add_argument("--originals", action="append", default=[], help="TASK=DIR (repeat it)")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap draws (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=512, help="tokens per text")
    return p.parse_args(argv)


def _named(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        sys.exit(f"{spec!r}: expected NAME=DIR")
    return name, Path(path)


def _predict(path: Path, texts, max_length: int) -> dict[str, np.ndarray]:
    """Predicted label names per task of the classifier at ``path``."""
    clf = load(path, device="cpu", max_length=max_length)
    logits = clf.logits(texts)
    return {t.name: np.asarray(t.labels, dtype=object)[logits[:, t.start : t.end].argmax(1)]
            for t in clf.tasks}  # fmt: skip


def _per_dataset(preds, datasets, texts, tasks) -> Predictions:
    """Each column's labels per (task, dataset), as hm3.evaluation.run keeps them."""
    index = {t: i for i, t in enumerate(texts)}
    out: Predictions = {}
    for name, by_task in preds.items():
        for d in datasets:
            rows = np.array([index[t] for t in d.texts])
            for task in tasks:
                if task in d.expected:
                    out[name, task, d.name] = by_task[task][rows]
    return out


def _check(suite, args, models, originals, full) -> None:
    """Score the first model and the originals as hm3.evaluation.run.evaluate does, or stop."""
    name, path = next(iter(models.items()))
    report = evaluate(suite, {name: path}, originals={t: originals[t] for t in args.tasks},
                      max_length=args.max_length, device="cpu", progress=False)  # fmt: skip
    theirs = {m.kind if m.kind == "original" else m.name: m.average_f1 for m in report.models}
    for ours, key in ((name, name), ("originals", "original")):
        here = full[ours].mean()
        print(f"check: {ours} average F1 {here:.6f} here, {theirs[key]:.6f} by evaluate")
        if abs(here - theirs[key]) > 1e-6:
            sys.exit(f"{ours}: scores differ from hm3.evaluation.run.evaluate; are its labels named?")


if __name__ == "__main__":
    main()
