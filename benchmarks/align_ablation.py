"""Benchmark: head alignment on the demo zoo — number of unlabeled texts, ridge, domain coverage.

What it does: gets the demo zoo exactly as ``hm3 demo`` does (pinned data, seeded splits,
cached fine-tuning), merges each case study of :data:`hm3.demo.cases.CASES` with each method of
:data:`hm3.demo.cases.METHODS` but its search column (or those ``--methods`` names, e.g.
``ties:0.7``), and for every
unlabeled text set runs :func:`hm3.alignment.api.collect` once, then solves for every ridge and
scores the aligned model on the case's tasks of the paper-style suite (average macro-F1, the
definition of :func:`hm3.evaluation.run.evaluate`). Reference rows: the unaligned merge
and the originals.

Text sets (seeded; every task's train split is shuffled once and sets take its first rows, so
``all 50 ⊂ all 200 ⊂ all 1000``):

* ``all N``   N texts evenly from the train splits of all four tasks (N = ``--sizes``);
* ``each N``  each head fitted on its own task's texts only: N / (the case's tasks) texts of
  every task's train split, a file per task (``hm3 align --texts TASK=FILE``);
* ``own N``   evenly from the case's own tasks only (N = ``--coverage-size``);
* ``one:T N`` from one task only: the case's first task T;
* ``ood N``   out of the tasks' domains: the demo's benign control (LLM user questions);
* ``demo``    the demo's own ``unlabeled.jsonl``: 100 train texts per task, what ``hm3 demo``
  aligns all4 on (it aligns a two-task case on its own tasks' 200 of them, a set like ``own``).

Fast path: the merged model's projection inputs on the suite texts are computed once per merge
(:func:`hm3.model.features.features`), and every solution's weight and bias are applied to them,
so a ridge costs a matrix product, not a pass over the suite. The script checks once, on one
(case, method, text set), that this gives the same average F1 as
:func:`hm3.evaluation.run.evaluate` on a classifier with the solution folded in, and prints it.

It prints one table per case (rows: text set / ridge; columns: methods; ``*`` marks a value at
or above the originals' average), a summary over the cases (per text set and ridge, the mean gap
to the originals' average and how many merges reach it), the time taken, and writes every
number to ``<workdir>/align_ablation.json``. It is not a test: it asserts nothing; numbers
depend on the zoo, which depends on the machine's training. Results:
``docs/results/alignment.md`` and ``docs/results/regmean-tsv.md``.

Usage::

    python benchmarks/align_ablation.py --quick              # small data and zoo, minutes
    python benchmarks/align_ablation.py --limit 150          # full zoo, 150 rows per dataset
    python benchmarks/align_ablation.py --sizes 1000,2000 --sets all   # does it saturate?
    python benchmarks/align_ablation.py --cases case2 --methods ties:0.3,ties:0.9   # densities
    python benchmarks/align_ablation.py --methods ties,regmean:0.9 --sizes 1000 --sets all
    python benchmarks/align_ablation.py --methods tsv,tsv:1.3 --sizes 1000 --sets all
    python benchmarks/align_ablation.py --suite HELDOUT/suite.yaml --cases case2   # new rows

``--suite`` scores on another suite, e.g. the rows the demo's splits left unused
(``heldout_suite.py``); the text sets and merges are the same.

``regmean`` computes each model's Gram matrices on ``--regmean-texts`` texts of its own task's
train split (the first ones of the same seeded order the text sets use).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import (
    add_cache,
    comma_list,
    demo_max_length,
    draw_texts,
    markdown_table,
    new_parser,
    read_texts,
    run_record,
    shuffled_pools,
    write_texts,
)
from sklearn.metrics import f1_score

from hm3.alignment.api import collect
from hm3.alignment.fit import RidgeSolution
from hm3.alignment.result import AlignStats
from hm3.defaults import AUTO_RIDGE, DEFAULT_RIDGE
from hm3.demo.cases import CASES, METHODS, SEARCH, CaseStudy, MethodSpec, merge_config, train_zoo
from hm3.demo.data.prepare import DemoData, prepare_data
from hm3.demo.data.spec import TASKS
from hm3.demo.sources.fetch import base_model_dir
from hm3.demo.train.classifier import TrainedClassifier
from hm3.evaluation.run import evaluate
from hm3.evaluation.suite import Dataset, Suite, load_datasets, load_suite
from hm3.io.checkpoint import read_config
from hm3.methods.registry import METHODS as MERGE_METHODS
from hm3.model.classifier import load
from hm3.model.features import features, find_projection
from hm3.model.labels import Task
from hm3.recipe import merge

SIZES, QUICK_SIZES = (50, 200, 1000), (16, 48, 96)
COVERAGE, QUICK_COVERAGE = 200, 48
REGMEAN_TEXTS = 250  # per model, its own train texts (RegMean's Gram matrices)
RIDGES = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0, AUTO_RIDGE)
TABLE_RIDGES = (0.0, 0.01, 0.03, 0.1, 1.0, 10.0, AUTO_RIDGE)  # per-case tables (0.03: the default)
KINDS = ("all", "each", "own", "one", "ood", "demo")  # the kinds of text set (module docstring)
WORKDIR = Path(tempfile.gettempdir()) / "hm3-align-ablation"
MAX_LENGTH = demo_max_length()  # what the demo aligns and evaluates with


@dataclass(frozen=True)
class TextSet:
    """An unlabeled text file to align on: its table label, where its texts came from."""

    label: str
    path: Path | dict[str, Path]  # one file, or task -> its own (kind ``each``)
    n: int
    source: str


@dataclass(frozen=True)
class SuiteFeatures:
    """A merge's projection inputs and logits on the distinct suite texts (rows: ``index``)."""

    x: torch.Tensor  # [n, d] float32
    logits: torch.Tensor  # [n, K] float32
    tasks: list[Task]
    seconds: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = new_parser(__doc__)
    add = parser.add_argument
    add("--quick", action="store_true", help="quick demo data and zoo, small text sets")
    add("--workdir", type=Path, default=WORKDIR, help=f"merges, texts, JSON (default {WORKDIR})")
    add_cache(parser)
    add("--sizes", default=None, help=f"text counts (default {SIZES}; quick {QUICK_SIZES})")
    add("--coverage-size", type=int, default=None, help=f"texts per set (default {COVERAGE})")
    add(
        "--ridges",
        default=",".join(map(str, RIDGES)),
        help="comma list of relative ridges; auto: each task's by generalised cross-validation",
    )
    add("--limit", type=int, default=None, help="suite rows per dataset (seeded sample)")
    add(
        "--suite",
        type=Path,
        default=None,
        help="score on this suite instead of the demo's (e.g. heldout_suite.py's); it must "
        "cover every task of the chosen cases",
    )
    add("--cases", default=",".join(c.name for c in CASES), help="comma list of case studies")
    add(
        "--methods",
        default=",".join(m.name for m in METHODS if m is not SEARCH),
        help="comma list: the demo's methods by name, or any merge method as METHOD[:DENSITY] "
        "(e.g. ties:0.7,task_arithmetic; regmean:ALPHA, e.g. regmean:0.9; tsv:LAMBDA)",
    )
    add(
        "--regmean-texts",
        type=int,
        default=REGMEAN_TEXTS,
        help=f"regmean: each model's Gram texts, from its train split (default {REGMEAN_TEXTS})",
    )
    add(
        "--sets", default=",".join(KINDS), help=f"comma list of text-set kinds ({', '.join(KINDS)})"
    )
    add("--batch-size", type=int, default=64, help="texts per forward pass")
    add("--seed", type=int, default=0, help="data, zoo, merge and text-set seed")
    add("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _ints(text: str | None, default: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",")) if text else tuple(default)


def _picked(names: str, known: Sequence, what: str) -> list:
    wanted = comma_list(names)
    by_name = {k.name: k for k in known}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        sys.exit(f"--{what} {','.join(unknown)}: unknown; valid: {', '.join(by_name)}")
    return [by_name[n] for n in wanted]


def _method_specs(names: str) -> list[MethodSpec]:
    """The demo's methods by name; other entries are ``METHOD[:DENSITY]`` of any hm3 method."""
    demo = {m.name: m for m in METHODS if m is not SEARCH}  # a search is not one merge
    specs = []
    for entry in comma_list(names):
        if entry in demo:
            specs.append(demo[entry])
            continue
        method, _, value = entry.partition(":")
        if method not in MERGE_METHODS:
            valid = ", ".join(dict.fromkeys([*demo, *MERGE_METHODS]))
            sys.exit(f"--methods {entry}: unknown method {method!r}; valid: {valid}")
        key = {"regmean": "alpha", "tsv": "lambda"}.get(method, "density")
        try:
            params = {key: float(value)} if value else {}
        except ValueError:
            sys.exit(f"--methods {entry}: {key} {value!r} is not a number (e.g. ties:0.7)")
        specs.append(MethodSpec(entry.replace(":", "-"), method, params))
    return specs


# ---------------------------------------------------------------- unlabeled text sets


def write_set(folder: Path, name: str, texts: list[str], label: str, source: str) -> TextSet:
    """Write ``texts`` as ``<folder>/<name>.jsonl`` rows ``{"text": ...}``."""
    path = write_texts(folder / f"{name}.jsonl", texts)
    return TextSet(label, path, len(texts), source)


def text_sets(
    case: CaseStudy,
    data: DemoData,
    pools: dict,
    folder: Path,
    sizes: Sequence[int],
    cov: int,
    kinds: Sequence[str] = KINDS,
) -> list[TextSet]:
    """The text sets one case is aligned on (``own`` left out when the case has every task)."""
    every = list(TASKS)
    first = case.tasks[0]
    specs = [("all", f"all-{n}", f"all {n}", every, n) for n in sizes]
    if set(case.tasks) != set(every):
        specs.append(("own", f"own-{case.name}-{cov}", f"own {cov}", list(case.tasks), cov))
    specs.append(("one", f"one-{first}-{cov}", f"one:{first} {cov}", [first], cov))
    specs.append(("ood", f"ood-{cov}", f"ood {cov}", ["ood"], cov))
    sets = [
        write_set(folder, name, draw_texts(pools, sources, n), label, "+".join(sources))
        for kind, name, label, sources, n in specs
        if kind in kinds
    ]
    if "each" in kinds:
        for n in sizes:
            share = n // len(case.tasks)
            files = {t: write_set(folder, f"each-{t}-{share}", draw_texts(pools, [t], share), t, t)
                     for t in case.tasks}  # fmt: skip
            paths = {t: f.path for t, f in files.items()}
            sets.append(TextSet(f"each {n}", paths, share * len(case.tasks), "each task's own"))
    if "demo" in kinds:
        demo = read_texts(data.unlabeled)
        sets.append(TextSet(f"demo {len(demo)}", data.unlabeled, len(demo), "demo unlabeled.jsonl"))
    return sets


# ---------------------------------------------------------------- fast evaluation


def distinct_texts(datasets: Sequence[Dataset]) -> list[str]:
    """The suite's distinct texts in the order :func:`hm3.evaluation.run.evaluate` predicts them."""
    return list(dict.fromkeys(t for d in datasets for t in d.texts))


def suite_features(merged: Path, texts: list[str], batch_size: int) -> SuiteFeatures:
    """Run the merge once over ``texts`` (length-sorted batches, as ``evaluate`` does)."""
    started = time.perf_counter()
    clf = load(merged, device="cpu", max_length=MAX_LENGTH)
    projection = find_projection(clf, read_config(merged, str(merged)), str(merged))
    module = clf.model.get_submodule(projection.module)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    x = torch.zeros(len(texts), module.weight.shape[1])
    logits = torch.zeros(len(texts), clf.tasks[-1].end)
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            x[idx], logits[idx] = features(clf, module, [texts[i] for i in idx], projection)
    return SuiteFeatures(x, logits, list(clf.tasks), time.perf_counter() - started)


def apply(x: torch.Tensor, solution: RidgeSolution) -> torch.Tensor:
    """The logits of a folded solution: float32 weights, as :meth:`AlignStats.fold` writes them."""
    return torch.nn.functional.linear(x, solution.weight.float(), solution.bias.float())


def score(logits: torch.Tensor, tasks: list[Task], datasets: Sequence[Dataset]) -> dict:
    """Per task, macro-F1 pooled over every dataset expecting it; ``average`` over tasks."""
    row = {t: i for i, t in enumerate(distinct_texts(datasets))}
    values = logits.numpy()
    out = {}
    for task in tasks:
        relevant = [d for d in datasets if task.name in d.expected]
        if not relevant:
            continue
        idx = np.array([row[t] for d in relevant for t in d.texts])
        truth = np.concatenate([np.asarray(d.expected[task.name], object) for d in relevant])
        pred = np.asarray(task.labels, object)[values[idx, task.start : task.end].argmax(1)]
        out[task.name] = float(f1_score(truth, pred, average="macro", zero_division=0))
    return {"average": float(np.mean(list(out.values()))), "tasks": out}


# ---------------------------------------------------------------- the runs


def limited(path: Path, limit: int | None, tasks: Sequence[str] | None = None) -> Suite:
    """The demo suite, restricted to ``tasks``, sampled to ``limit`` rows per dataset."""
    suite = load_suite(path)
    if tasks is not None:
        suite = suite.restricted(tasks)
    return suite if limit is None else suite.model_copy(update={"limit": limit})


def score_originals(
    suite_path: Path, zoo: dict[str, TrainedClassifier], tasks: Sequence[str], args
) -> dict[str, float]:
    """Each original's macro-F1 on its task of the full suite (the same rows as in every case)."""
    result = evaluate(
        limited(suite_path, args.limit, tasks),
        {},
        originals={name: zoo[name].path for name in tasks},
        batch_size=args.batch_size,
        max_length=MAX_LENGTH,
        device="cpu",
        progress=not args.no_progress,
    )
    scores = result.model("original")
    return {name: scores.task(name).f1 for name in tasks}


def sweep(stats: AlignStats, feats: SuiteFeatures, datasets, ridges) -> dict[str, dict]:
    """Solve for every ridge and score the aligned logits; keyed by ``str(ridge)``."""
    out = {}
    for ridge in ridges:
        solution = stats.solve(ridge)
        rmse = {t.name: round(t.rmse_after, 5) for t in stats.residuals(solution)}
        out[str(ridge)] = score(apply(feats.x, solution), feats.tasks, datasets) | {"rmse": rmse}
    return out


def check_fast_path(
    merged: Path, stats: AlignStats, suite: Suite, ridge: float | str, fast: float, args
) -> dict:
    """Fold one ridge's solution into the merge and score it with ``evaluate``."""
    clf = load(merged, device="cpu", max_length=MAX_LENGTH)
    stats.fold(clf, stats.solve(ridge))
    result = evaluate(suite, {"aligned": clf}, batch_size=args.batch_size, progress=False)
    slow = result.model("aligned").average_f1
    print(
        f"  check: fast path {fast:.6f} vs hm3.evaluation.run.evaluate {slow:.6f}"
        f" (|diff| {abs(fast - slow):.2e}) on {merged.parent.name}/{merged.name}"
    )
    return {
        "merge": f"{merged.parent.name}/{merged.name}",
        "ridge": ridge,
        "fast": fast,
        "evaluate": slow,
        "abs_diff": abs(fast - slow),
    }


def regmean_texts(case: CaseStudy, pools: dict, folder: Path, n: int) -> dict[str, Path]:
    """Each task's first ``n`` pool texts (its own train split): what regmean's Grams see."""
    return {
        t: write_set(folder, f"regmean-{t}-{n}", draw_texts(pools, [t], n), t, t).path
        for t in case.tasks
    }


def _shown(path: Path | dict[str, Path]) -> str | dict[str, str]:
    return {t: str(p) for t, p in path.items()} if isinstance(path, dict) else str(path)


def run_method(case, spec, base, zoo, sets, datasets, suite, args, need_check, gram) -> dict:
    """Merge one case with one method, then align on every text set and sweep the ridges."""
    merged = args.workdir / "models" / case.name / spec.name
    started = time.perf_counter()
    merge(
        merge_config(case, spec, base, zoo, args.seed, gram),
        merged,
        force=True,
        progress=not args.no_progress,
    )
    feats = suite_features(merged, distinct_texts(datasets), args.batch_size)
    out = {
        "merge_seconds": round(time.perf_counter() - started - feats.seconds, 1),
        "suite_seconds": round(feats.seconds, 1),
        "merged": score(feats.logits, feats.tasks, datasets),
        "aligned": {},
    }
    for ts in sets:
        t0 = time.perf_counter()
        stats = collect(
            merged,
            ts.path,
            batch_size=args.batch_size,
            max_length=MAX_LENGTH,
            device="cpu",
            progress=not args.no_progress,
        )
        row = sweep(stats, feats, datasets, args.ridge_values)
        out["aligned"][ts.label] = {
            "collect_seconds": round(time.perf_counter() - t0, 1),
            "ridges": row,
        }
        if need_check:  # the default ridge when it is swept, else the first one
            ridge = DEFAULT_RIDGE if DEFAULT_RIDGE in args.ridge_values else args.ridge_values[0]
            fast = row[str(ridge)]["average"]
            out["check"] = check_fast_path(merged, stats, suite, ridge, fast, args)
            need_check = False
    seconds = sum(v["collect_seconds"] for v in out["aligned"].values())
    print(
        f"  merged {out['merged']['average']:.3f}; suite pass {feats.seconds:.0f} s; "
        f"{len(sets)} text sets collected in {seconds:.0f} s",
        flush=True,
    )
    return out


def run_case(case, data, base, zoo, pools, originals, args) -> dict:
    """One case study: its text sets, every method, and the originals' reference."""
    suite = limited(args.suite or data.suite, args.limit, case.tasks)
    datasets = load_datasets(suite)
    sets = text_sets(
        case, data, pools, args.workdir / "texts", args.size_values, args.cov, args.kinds
    )
    reference = {t: originals[t] for t in case.tasks}
    out = {
        "tasks": list(case.tasks),
        "originals": {"average": float(np.mean(list(reference.values()))), "tasks": reference},
        "suite_texts": len(distinct_texts(datasets)),
        "text_sets": {
            s.label: {"n": s.n, "source": s.source, "path": _shown(s.path)} for s in sets
        },
        "methods": {},
    }
    gram = None  # only regmean reads them
    if any(spec.method == "regmean" for spec in args.method_specs):
        gram = regmean_texts(case, pools, args.workdir / "texts", args.regmean_texts)
    for spec in args.method_specs:
        need_check = case.name == args.check_case and spec == args.method_specs[0]
        print(f"· {case.name} / {spec.name}", flush=True)
        out["methods"][spec.name] = run_method(
            case, spec, base, zoo, sets, datasets, suite, args, need_check, gram
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    args.size_values = _ints(args.sizes, QUICK_SIZES if args.quick else SIZES)
    args.cov = args.coverage_size or (QUICK_COVERAGE if args.quick else COVERAGE)
    args.ridge_values = tuple(
        AUTO_RIDGE if r.strip() == AUTO_RIDGE else float(r) for r in args.ridges.split(",")
    )
    args.kinds = comma_list(args.sets)
    if unknown := [k for k in args.kinds if k not in KINDS]:
        sys.exit(f"--sets {','.join(unknown)}: unknown; valid: {', '.join(KINDS)}")
    cases = _picked(args.cases, CASES, "cases")
    args.method_specs = _method_specs(args.methods)
    # check on the case with the fewest suite texts: case2 when it is run
    args.check_case = "case2" if any(c.name == "case2" for c in cases) else cases[0].name
    args.workdir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    print("· demo data and zoo (cached)", flush=True)
    base = base_model_dir(args.cache)
    data = prepare_data(args.cache, seed=args.seed, quick=args.quick)
    zoo = train_zoo(base, data, args.cache, seed=args.seed, progress=progress)
    t0 = time.perf_counter()
    tasks = list(dict.fromkeys(t for c in cases for t in c.tasks))
    originals = score_originals(args.suite or data.suite, zoo, tasks, args)
    print(
        f"· originals scored in {time.perf_counter() - t0:.0f} s: "
        + ", ".join(f"{t} {f:.3f}" for t, f in originals.items()),
        flush=True,
    )
    pools = shuffled_pools(data, args.seed)
    results = {c.name: run_case(c, data, base, zoo, pools, originals, args) for c in cases}
    seconds = time.perf_counter() - started
    report = _report(args, argv, data, originals, results, seconds)
    (args.workdir / "align_ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    shown = [r for r in args.ridge_values if r in TABLE_RIDGES] or args.ridge_values
    for name, case in results.items():
        print(f"\n### {name}: {' + '.join(case['tasks'])}\n")
        print(case_table(case, shown))
    print("\n### summary\n")
    print(summary_table(results, args.ridge_values))
    print(f"\ntotal {seconds / 60:.1f} min; numbers in {args.workdir / 'align_ablation.json'}")
    return 0


def _report(args, argv, data: DemoData, originals, results, seconds: float) -> dict:
    """Everything measured, with the settings that produced it."""
    return {
        **run_record("align_ablation.py", argv),
        "quick": args.quick,
        "limit": args.limit,
        "seed": args.seed,
        "data": str(data.root),
        "suite": str(args.suite or data.suite),
        "sizes": list(args.size_values),
        "coverage_size": args.cov,
        "ridges": list(args.ridge_values),
        "default_ridge": DEFAULT_RIDGE,
        "max_length": MAX_LENGTH,
        "originals": originals,
        "cases": results,
        "seconds": round(seconds, 1),
    }


# ---------------------------------------------------------------- tables


def _cell(value: float, target: float) -> str:
    return f"{value:.3f}{'*' if value >= target - 1e-12 else ''}"


def _ridge(ridge: float | str) -> str:
    return ridge if isinstance(ridge, str) else f"{ridge:g}"


def case_table(case: dict, ridges: Sequence[float | str]) -> str:
    """Average macro-F1 of one case: reference rows, then every text set × ridge."""
    methods = list(case["methods"])
    target = case["originals"]["average"]
    rows = [
        ["originals", "–", *(f"{target:.3f}" for _ in methods)],
        ["merged, not aligned", "–"]
        + [_cell(case["methods"][m]["merged"]["average"], target) for m in methods],
    ]
    for label in case["text_sets"]:
        for ridge in ridges:
            cells = [
                _cell(case["methods"][m]["aligned"][label]["ridges"][str(ridge)]["average"], target)
                for m in methods
            ]
            rows.append([label, _ridge(ridge), *cells])
    numeric = [False] + [True] * (1 + len(methods))
    return markdown_table(["text set", "ridge", *methods], rows, numeric)


def _kind(label: str) -> str:
    """A text set's label without the case-specific task name (``one:spam 200`` → ``one 200``)."""
    head, _, rest = label.partition(" ")
    return f"{head.partition(':')[0]} {rest}".strip()


def _gaps(results: dict, ridges: Sequence[float | str]) -> dict[str, dict[str, list[float]]]:
    """Per text-set kind and ridge (``-`` for the unaligned merge): aligned − originals."""
    gaps: dict[str, dict[str, list[float]]] = {"merged, not aligned": {"-": []}}
    for case in results.values():
        target = case["originals"]["average"]
        for method in case["methods"].values():
            gaps["merged, not aligned"]["-"].append(method["merged"]["average"] - target)
            for label, row in method["aligned"].items():
                per_ridge = gaps.setdefault(_kind(label), {})
                for ridge in ridges:
                    value = row["ridges"][str(ridge)]["average"] - target
                    per_ridge.setdefault(str(ridge), []).append(value)
    return gaps


def summary_table(results: dict, ridges: Sequence[float | str]) -> str:
    """Mean (aligned − originals) average F1 over cases × methods; (merges reaching it / all)."""
    rows = []
    for kind, per_ridge in _gaps(results, ridges).items():
        cells = []
        for ridge in ridges:
            values = per_ridge.get(str(ridge), per_ridge.get("-"))
            if values is None:
                cells.append("")
                continue
            reached = sum(v >= -1e-12 for v in values)
            cells.append(f"{np.mean(values):+.3f} ({reached}/{len(values)})")
        if kind == "merged, not aligned":
            cells = [cells[0]] + [""] * (len(cells) - 1)
        rows.append([kind, *cells])
    header = ["text set", *(f"ridge {_ridge(r)}" for r in ridges)]
    return markdown_table(header, rows, [False] + [True] * len(ridges))


if __name__ == "__main__":
    raise SystemExit(main())
