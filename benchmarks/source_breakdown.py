"""Benchmark helper: one demo task's macro-F1 per data source, for the originals and merges.

Why: a merge can be level with its original on a whole test set and still lose on one kind
of text (``docs/results/alignment.md``, "New rows for case 2": case2's merges are level on the
suite and below on held-out rows). The demo's tasks mix sources (sentiment: amazon, movie
and tweets texts from VADER), and the splits do not record which row came from where; this
script rebuilds the task's pool as ``hm3 demo`` does, looks up each row's source and scores
every model on each source's rows, plus all rows together.

Rows come from a task's split of the demo data (``--split test``) or from any JSONL files that
hold that task's texts, one label per file (``--labelled LABEL=FILE``, e.g. the held-out suite
of ``heldout_suite.py``). A model is NAME=DIR: an original, or a merged model with the task.

Usage::

    python benchmarks/source_breakdown.py --task sentiment --split test \
        original=<zoo>/sentiment-… ties=<aligned ties merge> tsv=<aligned tsv merge>
    python benchmarks/source_breakdown.py --task sentiment \
        --labelled negative=/tmp/w/heldout2/suite/sentiment_negative.jsonl \
        --labelled neutral=… --labelled positive=… original=… ties=…
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import (
    add_cache,
    demo_max_length,
    markdown_table,
    named,
    new_parser,
    print_record,
    run_record,
    task_rows,
)

import hm3
from hm3.demo.data.prepare import prepare_data
from hm3.demo.data.spec import TASKS
from hm3.evaluation.bootstrap import macro_f1
from hm3.io.tables import jsonl_records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add("models", nargs="+", help="NAME=DIR, an original or a merge that has --task")
    add("--task", required=True, choices=sorted(TASKS), help="the demo task")
    add("--split", choices=("train", "validation", "test"), help="score this split's rows")
    add("--labelled", action="append", default=[], help="LABEL=FILE (JSONL with a text field)")
    add_cache(parser)
    add("--seed", type=int, default=0, help="the demo data's seed")
    args = parser.parse_args(argv)
    if bool(args.split) == bool(args.labelled):
        parser.error("give either --split or --labelled LABEL=FILE (one per label)")
    return args


def rows(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The texts to score and their expected labels."""
    if args.split:
        data = prepare_data(args.cache, seed=args.seed)
        path = data.tasks[args.task].files[args.split]
        loaded = [r for _, r in jsonl_records(path, str(path))]
        return [r["text"] for r in loaded], [r["label"] for r in loaded]
    texts, gold = [], []
    for item in args.labelled:
        label, _, path = item.partition("=")
        if label not in TASKS[args.task].labels or not path:
            sys.exit(
                f"--labelled {item}: expected LABEL=FILE with LABEL in {TASKS[args.task].labels}"
            )
        for _, record in jsonl_records(Path(path), path):
            texts.append(record["text"])
            gold.append(label)
    return texts, gold


def sources_of(texts: list[str], task: str, cache: Path | None, seed: int) -> list[str]:
    source = {r.text: r.source for r in task_rows(cache, seed)[task]}
    missing = [t for t in texts if t not in source]
    if missing:
        sys.exit(f"{len(missing)} texts are not in the {task} pool (first: {missing[0][:80]!r})")
    return [source[t] for t in texts]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print_record(run_record("source_breakdown.py", argv))
    labels = TASKS[args.task].labels
    texts, gold = rows(args)
    sources = sources_of(texts, args.task, args.cache, args.seed)
    groups = {s: np.array([x == s for x in sources]) for s in sorted(set(sources))}
    groups["all"] = np.ones(len(texts), dtype=bool)
    expected = np.array([labels.index(g) for g in gold])
    print(f"{args.task}: " + ", ".join(f"{s} {int(m.sum())}" for s, m in groups.items()) + " rows")
    table = []
    for item in args.models:
        name, path = named(item, "model")
        clf = hm3.load(path, device="cpu", max_length=demo_max_length())
        task = next((t for t in clf.tasks if tuple(t.labels) == labels), None)
        if task is None:
            sys.exit(f"{name}: no task with the labels {labels} in {path}")
        predicted = np.argmax(clf.predict_proba(texts)[task.name], axis=1)
        cells = []
        for mask in groups.values():
            confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
            np.add.at(confusion, (expected[mask], predicted[mask]), 1)
            cells.append(f"{macro_f1(confusion):.3f}")
        table.append([name, *cells])
        print(f"  {name}: " + ", ".join(cells), flush=True)
    print(markdown_table(["model", *groups], table, [False] + [True] * len(groups)))


if __name__ == "__main__":
    main()
