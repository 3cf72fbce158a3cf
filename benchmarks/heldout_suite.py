"""Benchmark helper: a held-out evaluation suite for the demo zoo, from rows no split used.

Why: the demo suite has 250 rows per label, so two models' average F1 can differ by ±0.01 by
chance (``hm3 evaluate --bootstrap`` says how much). The demo's sources hold many more labelled
rows than its splits take; this script collects the rows that the demo's seeded splits left
unused and writes them as a second suite, so that a close comparison (an aligned merge against
its originals) can be repeated on rows that none of the models or alignment texts were drawn
from, nor anything similar to them (``docs/results/alignment.md``, "New rows for case 2").

How: it rebuilds the task pools exactly as :func:`hm3.demo.data.prepare.prepare_data` does,
re-deals the seeded splits and checks that they equal the cached files row for row (it stops if they
do not: the cache was written by another data version). A row is held out when its
near-duplicate group (:func:`~hm3.demo.data.text.group_key`) has a single label and touches
no split of any task, and when no text of any split or of the benign control is similar to it
(Jaccard similarity of their word 5-grams ≥ 0.3, :class:`~hm3.demo.data.near.NearCopies`):
``group_key`` only catches texts that begin alike, while e-mails of one spam run or one thread
differ in their first lines (at 0.5 a third of the held-out spam was still a rewording of a
train e-mail). Since demo data version 2 the splits keep such groups together too, but the
rest of a group cut short at a full split is unused and still a near-copy of split rows.
Each label then gets the same source mix, so that a model cannot score
by telling sources apart: for every source that every label has, the smallest count over the
labels, drawn seeded. A task where that leaves fewer than ``--min-rows`` rows per label is
left out, with the reason printed (on the demo data: prompt_attack, whose jailbreaks are all
in the splits; toxicity, whose unused toxic rows come from a source its non_toxic rows do not).

Spam and sentiment get no cross-checks in the demo suite, so the held-out datasets expect
their own task's label only. Writes ``<out>/suite.yaml``, one JSONL per dataset,
``<out>/combined.yaml`` (the demo suite's datasets of the same tasks, by absolute path, plus the
held-out ones, named ``heldout_*``: one larger sample of each task's test distribution) and
``<out>/heldout.json`` (rows per label and source).

Usage::

    python benchmarks/heldout_suite.py --cache /tmp/zoo --out /tmp/heldout
    python benchmarks/align_ablation.py --suite /tmp/heldout/suite.yaml --cases case2 ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from _common import add_cache, new_parser, print_record, run_record, task_rows

from hm3.demo.data.near import NEAR, NearCopies
from hm3.demo.data.prepare import prepare_data
from hm3.demo.data.spec import FULL, TASKS
from hm3.demo.data.split import Row, rng, split_rows
from hm3.demo.data.suite import write_jsonl
from hm3.demo.data.text import dedupe_key, group_key
from hm3.evaluation.suite import load_suite

MIN_ROWS = 250  # per label: at least the demo suite's size, or the check gains nothing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add("--out", type=Path, required=True, help="folder for suite.yaml and its datasets")
    add_cache(parser)
    add("--seed", type=int, default=0, help="the demo data's seed, also seeds the draw")
    add("--min-rows", type=int, default=MIN_ROWS, help=f"per label (default {MIN_ROWS})")
    add("--force", action="store_true", help="replace --out if it exists")
    return parser.parse_args(argv)


def unused_rows(cache: Path | None, seed: int) -> tuple[dict[str, list[Row]], Path, dict]:
    """Per task, the labelled rows that share nothing with a split of any task (see the module
    docstring); the demo suite's path; rows dropped as near-copies, per task."""
    data = prepare_data(cache, seed=seed)
    rows, used = task_rows(cache, seed), []
    for name, spec in TASKS.items():
        splits, _ = split_rows(
            rows[name], spec.labels, FULL.per_label(len(spec.labels)), seed, name
        )
        for split, chosen in splits.items():
            _same_as_cached(data.tasks[name].files[split], chosen, f"{name}/{split}")
            used += [r.text for r in chosen]
    with open(data.benign_control, encoding="utf-8") as f:
        used += [json.loads(line)["text"] for line in f]
    used_groups = {group_key(t) for t in used}
    used_texts = {dedupe_key(t) for t in used}
    seen = NearCopies(used)
    out, near = {}, {}
    for name, pool in rows.items():
        labels: dict[str, set[str]] = defaultdict(set)
        for row in pool:
            labels[group_key(row.text)].add(row.label)
        fresh = [
            r
            for r in pool
            if len(labels[group_key(r.text)]) == 1
            and group_key(r.text) not in used_groups
            and dedupe_key(r.text) not in used_texts
        ]
        out[name] = [r for r in fresh if seen.similarity(r.text) < NEAR]
        near[name] = len(fresh) - len(out[name])
    return out, data.suite, near


def _same_as_cached(path: Path, chosen: Sequence[Row], what: str) -> None:
    with open(path, encoding="utf-8") as f:
        cached = [json.loads(line)["text"] for line in f]
    if cached != [r.text for r in chosen]:
        sys.exit(
            f"{what}: the cached split ({path}) differs from the one this hm3 deals; rebuild the"
            " cache with this version (`hm3 demo`) or use the hm3 that wrote it"
        )


def same_mix(
    rows: Sequence[Row], labels: Sequence[str], seed: int, task: str
) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """Equal rows per label with the same source mix; ``{label: rows}`` and rows per source."""
    cells: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        cells[row.label, row.source].append(row)
    sources = sorted({s for _, s in cells})
    per_source = {s: min(len(cells[label, s]) for label in labels) for s in sources}
    per_source = {s: n for s, n in per_source.items() if n > 0}
    picked: dict[str, list[Row]] = {}
    for label in labels:
        picked[label] = []
        for source, n in per_source.items():
            cell = sorted(cells[label, source], key=lambda r: r.text)
            rng(seed, "heldout", task, label, source).shuffle(cell)
            picked[label] += cell[:n]
        rng(seed, "heldout", task, label).shuffle(picked[label])
    return picked, per_source


def write_suites(
    out: Path,
    final: Path,
    picked: Mapping[str, Mapping[str, list[Row]]],
    demo_suite: Path,
    seed: int,
) -> None:
    """``suite.yaml`` (held-out rows only) and ``combined.yaml`` (the demo's rows, then them)."""
    held = []
    for task, by_label in picked.items():
        for label, rows in by_label.items():
            path = f"suite/{task}_{label}.jsonl"
            write_jsonl(out / path, ({"text": r.text} for r in rows))
            held.append(
                {"name": f"{task}_{label}", "path": path, "text": "text", "expect": {task: label}}
            )
    demo = load_suite(demo_suite).restricted(list(picked))
    combined = [
        {**d.model_dump(exclude_none=True), "path": str(demo.resolve(d).resolve())}
        for d in demo.datasets
    ]
    combined += [
        {**d, "name": f"heldout_{d['name']}", "path": str(final / d["path"])} for d in held
    ]
    head = (
        "# Held-out suite from rows the demo's splits left unused (benchmarks/heldout_suite.py)\n"
    )
    for name, datasets in (("suite.yaml", held), ("combined.yaml", combined)):
        body = yaml.safe_dump({"datasets": datasets, "seed": seed}, sort_keys=False)
        (out / name).write_text(head + body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out.exists() and not args.force:
        sys.exit(f"{args.out} exists; pass --force to replace it")
    print_record(run_record("heldout_suite.py", argv))
    unused, demo_suite, near = unused_rows(args.cache, args.seed)
    picked, report = {}, {}
    for task, rows in unused.items():
        labels = TASKS[task].labels
        by_label, per_source = same_mix(rows, labels, args.seed, task)
        per_label = sum(per_source.values())
        left = dict(sorted(Counter(f"{r.label}/{r.source}" for r in rows).items()))
        report[task] = {
            "unused": left,
            "near_copies_dropped": near[task],
            "per_label": per_label,
            "per_source": per_source,
        }
        if per_label < args.min_rows:
            report[task]["left_out"] = True
            print(f"· {task}: left out, {per_label} rows per label with one source mix; {left}")
            continue
        picked[task] = by_label
        print(
            f"· {task}: {per_label} rows per label, per source {per_source}"
            f" ({near[task]} near-copies of seen texts dropped)"
        )
    if not picked:
        sys.exit(f"no task has {args.min_rows} unused rows per label; lower --min-rows")
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_suites(tmp, args.out.resolve(), picked, demo_suite, args.seed)
    (tmp / "heldout.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"suites → {args.out / 'suite.yaml'}, {args.out / 'combined.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
