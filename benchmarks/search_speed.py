"""Benchmark: seconds per search trial, ``hm3 search`` against the paper's way (Algorithm 3).

The paper's way, per trial: a DARE-TIES density from Beta(1.2, 2) written into the mergekit
recipe of the HM3-expanded inputs (``hm3 expand``, once, before the clock), ``mergekit-yaml``
as a fresh process, then the merged checkpoint reloaded (:func:`hm3.model.classifier.load`) and
scored on the validation sample (:func:`hm3.evaluation.run.evaluate`, batch 16, 64 tokens) in
this process. ``hm3 search``: one subprocess of N trials (``--prune``) on the same two models
and the same rows (the seeded sample of ``--val-samples`` rows per dataset, written as a suite
of its own), timed two ways, both printed: the process's wall time / N (imports, loading,
tokenising included) and the mean of ``trials.csv``'s seconds. ``hm3 search`` also needs a test
sample: 5 rows per test dataset, scored on each new best, a cost counted against hm3.

The two run interleaved (A B, B A, ...) over ``--rounds`` on the demo zoo's two MiniLM
classifiers of ``--case``. Then the pruning check: the same seeded search with ``--prune`` and
``--no-prune``, how many pruned trials would have beaten the best before them, and their
seconds per trial; then ``--paper-trials`` more trials the paper's way, so that the paper way's
mean (every paper trial) spans the minutes of both. The table has every way's ratio to it.
``--dtype bfloat16`` runs every ``hm3 search`` process in that dtype (the paper way stays
float32, as ``mergekit-yaml`` writes it) and adds a float32 ``--no-prune`` run of the pruning
check's trials, to compare each trial's validation score in both dtypes. It asserts nothing;
the numbers depend on the machine and on what else runs on it.

Usage::

    python benchmarks/search_speed.py                       # case1, ~1,000 validation rows
    python benchmarks/search_speed.py --rounds 1 --paper-trials 2 --hm3-trials 10
    python benchmarks/search_speed.py --rounds 0 --paper-trials 2 --dtype bfloat16
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import (
    add_cache,
    demo_max_length,
    markdown_table,
    new_parser,
    print_record,
    run_record,
    search_inputs,
)

BATCH_SIZE = 16  # the demo's evaluation batch on 2 CPU cores
PAPER_PRIOR = (1.2, 2.0)
TEST_SAMPLES = 5  # hm3 search needs a test sample; 5 rows a dataset keep its cost (hm3's) small


# -- the paper's way -----------------------------------------------------------------------
def expanded_inputs(config: Path, out: Path) -> dict:
    """``hm3 expand`` of the case's recipe, once; the mergekit recipe it wrote, as a dict."""
    from hm3.merging.config import MergeConfig
    from hm3.merging.expanded import expand

    shutil.rmtree(out, ignore_errors=True)
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    plain = {k: v for k, v in doc.items() if k not in ("search", "align")}  # the recipe alone
    expand(MergeConfig.from_dict(plain, source=str(config)), out, progress=False)
    return yaml.safe_load((out / "mergekit.yaml").read_text(encoding="utf-8"))


def paper_trial(recipe: dict, density: float, work: Path, val_suite) -> dict[str, float]:
    """One trial the paper's way; seconds of each part and the validation average F1."""
    from hm3.evaluation.run import evaluate
    from hm3.model.classifier import load

    doc = {**recipe, "parameters": {**recipe.get("parameters", {}), "density": density}}
    doc["models"] = [
        {**m, "parameters": {**m.get("parameters", {}), "density": density}}
        for m in recipe["models"]
    ]
    trial_yaml, out = work / "trial.yaml", work / "merged"
    trial_yaml.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["mergekit-yaml", str(trial_yaml), str(out), "--quiet"], capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(f"mergekit-yaml failed:\n{proc.stdout}\n{proc.stderr}")
    t1 = time.perf_counter()
    model = load(out, max_length=demo_max_length())
    t2 = time.perf_counter()
    result = evaluate(val_suite, {"merged": model}, batch_size=BATCH_SIZE, progress=False)
    t3 = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "merge": t1 - t0,
        "reload": t2 - t1,
        "evaluate": t3 - t2,
        "total": t3 - t0,
        "f1": result.model("merged").average_f1,
    }


def sampled_suite(val_suite: Path, n: int, out: Path) -> Path:
    """The validation suite's seeded sample of ``n`` rows per dataset, written as a suite of
    its own (labels per row), so both ways score exactly the same rows."""
    from hm3.demo.data.suite import write_jsonl
    from hm3.evaluation.suite import load_datasets, load_suite

    datasets = load_datasets(load_suite(val_suite).model_copy(update={"limit": n}))
    specs = []
    for data in datasets:
        rows = (
            {"text": text, **{task: labels[i] for task, labels in data.expected.items()}}
            for i, text in enumerate(data.texts)
        )
        write_jsonl(out / f"{data.name}.jsonl", rows)
        expect = {task: {"column": task} for task in data.expected}
        specs.append({"name": data.name, "path": f"{data.name}.jsonl", "expect": expect})
    path = out / "val_sample.yaml"
    path.write_text(yaml.safe_dump({"datasets": specs}, sort_keys=False), encoding="utf-8")
    return path


# -- hm3 search ----------------------------------------------------------------------------
def hm3_search(
    inputs: dict[str, Path], out: Path, trials: int, args, prune: bool, seed: int,
    dtype: str | None = None,
) -> dict:  # fmt: skip
    """One ``hm3 search`` process (in ``dtype``, default ``--dtype``'s); its wall time and its
    trials.csv rows."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        "hm3",
        "search",
        str(inputs["config"]),
        "--suite",
        str(inputs["val_suite"]),
        "--trials",
        str(trials),
        "--val-samples",
        str(args.val_samples),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--test-suite",
        str(inputs["test_suite"]),
        "--test-samples",
        str(TEST_SAMPLES),
        "--prune" if prune else "--no-prune",
        # the same tokens and batches as the paper way's evaluate
        "--max-length",
        str(demo_max_length()),
        "--batch-size",
        str(BATCH_SIZE),
        "--dtype",
        dtype or args.dtype,
        "--no-progress",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    with open(out / "trials.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {"wall": wall, "rows": rows, "command": " ".join(cmd)}


# -- the pruning check ---------------------------------------------------------------------
def pruning_check(pruned: list[dict], full: list[dict]) -> dict:
    """Each trial the pruned run stopped, looked up in the unpruned run of the same seed (same
    number, same density): would its full validation score have beaten the best completed
    trial before it?"""
    by_number = {r["number"]: r for r in full}
    best, would_win, n_pruned, mismatched = -1.0, 0, 0, 0
    for row in sorted(pruned, key=lambda r: int(r["number"])):
        twin = by_number[row["number"]]
        mismatched += abs(float(row["density"]) - float(twin["density"])) > 1e-6
        if row["pruned"] == "True":
            n_pruned += 1
            would_win += float(twin["val_average"]) > best
        else:
            best = max(best, float(row["val_average"]))
    return {
        "trials": len(pruned),
        "pruned": n_pruned,
        "would_have_been_best": would_win,
        "density_mismatches": mismatched,
        "best_val_pruned_run": best,
        "best_val_unpruned_run": max(float(r["val_average"]) for r in full),
    }


def dtype_check(fast: dict, exact: dict) -> dict:
    """The same unpruned trials scored in two dtypes: how far their validation scores move, and
    whether the best trial is the same."""
    a = {r["number"]: float(r["val_average"]) for r in fast["rows"]}
    b = {r["number"]: float(r["val_average"]) for r in exact["rows"]}
    diff = [abs(a[k] - b[k]) for k in b]
    return {
        "trials": len(diff),
        "max_abs_diff_val": round(max(diff), 5),
        "mean_abs_diff_val": round(statistics.mean(diff), 5),
        "same_best": max(a, key=lambda k: (a[k], -int(k))) == max(b, key=lambda k: (b[k], -int(k))),
    }


# -- the run -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None):
    parser = new_parser(__doc__)
    add_cache(parser)
    parser.add_argument("--case", default="case1", help="demo case (two models: case1, case2)")
    parser.add_argument(
        "--val-samples",
        type=int,
        default=75,
        help="validation rows per dataset (75: 1,050 rows on case1)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--paper-trials", type=int, default=3, help="paper-way trials a round")
    parser.add_argument("--hm3-trials", type=int, default=20, help="hm3 search trials a round")
    parser.add_argument(
        "--prune-trials", type=int, default=40, help="trials of the pruning check (0: skip it)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
        help="the dtype hm3 search scores in (float32: as the paper way)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="where to work (default: a temp dir)")
    return parser.parse_args(argv)


def paper_trials(recipe: dict, n: int, rng, work: Path, val_suite) -> list[dict]:
    """``n`` trials the paper's way, each with a fresh density from the paper's prior."""
    out = []
    for _ in range(n):
        density = float(rng.beta(*PAPER_PRIOR))
        p = {"density": density, **paper_trial(recipe, density, work, val_suite)}
        out.append(p)
        print(
            f"  paper trial: density {density:.3f} merge {p['merge']:.1f} s, reload "
            f"{p['reload']:.1f} s, evaluate {p['evaluate']:.1f} s, val F1 {p['f1']:.4f}",
            flush=True,
        )
    return out


def speed_rounds(args, inputs: dict[str, Path], work: Path, recipe: dict, val_suite, rng):
    """The interleaved rounds: every paper-way trial, every ``hm3 search`` process."""
    paper, hm3 = [], []
    for r in range(args.rounds):
        for side in ("paper", "hm3") if r % 2 == 0 else ("hm3", "paper"):
            if side == "paper":
                paper += paper_trials(recipe, args.paper_trials, rng, work, val_suite)
            else:
                run = hm3_search(
                    inputs, work / f"hm3-{r}", args.hm3_trials, args, True, args.seed + r
                )
                hm3.append(run)
                print(f"  hm3 search: {args.hm3_trials} trials in {run['wall']:.1f} s", flush=True)
    return paper, hm3


def per_trial(runs: list[dict]) -> tuple[str, float, float]:
    """Trials, whole processes' seconds per trial, and the mean of trials.csv's seconds."""
    rows = [r for h in runs for r in h["rows"]]
    wall = sum(h["wall"] for h in runs) / len(rows)
    return str(len(rows)), wall, statistics.mean(float(r["seconds"]) for r in rows)


def report(args, paper: list[dict], hm3: list[dict], check: dict, rows_per_trial: int) -> None:
    """The table of seconds per trial; the paper way's mean is over every paper trial, those
    of the rounds and those run after the pruning check."""
    paper_s = statistics.mean(p["total"] for p in paper)
    parts = {k: statistics.mean(p[k] for p in paper) for k in ("merge", "reload", "evaluate")}
    ways = [("paper way (mergekit-yaml + reload + evaluate)", str(len(paper)), paper_s)]
    for label, runs in [("hm3 search --prune", hm3), *check.items()]:
        if not runs:  # --rounds 0
            continue
        n, wall, csv_s = per_trial(runs)
        ways += [(f"{label}, whole process / trials", n, wall),
                 (f"{label}, trials.csv seconds", n, csv_s)]  # fmt: skip
    rows = [[way, k, f"{s:.2f}", f"{paper_s / s:.2f}×"] for way, k, s in ways]
    print(
        f"\n{args.case}, {rows_per_trial} validation rows a trial ({args.val_samples} per "
        f"dataset), {args.rounds} interleaved rounds, {os.cpu_count()} cores, hm3 search in "
        f"{args.dtype}\n"
    )
    print(
        markdown_table(["way", "trials", "s / trial", "speed-up"], rows, (False, True, True, True))
    )
    print(
        f"\npaper way, mean seconds: mergekit-yaml {parts['merge']:.2f}, reload "
        f"{parts['reload']:.2f}, evaluate {parts['evaluate']:.2f}; per trial, in order: "
        + ", ".join(f"{p['total']:.2f}" for p in paper)
    )
    if hm3:
        print(f"hm3 search command: {hm3[0]['command']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_record(run_record("search_speed.py", argv))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hm3-search-speed-"))
    try:
        from hm3.evaluation.suite import load_datasets, load_suite

        inputs = search_inputs(args.cache, work / "inputs", args.case, args.seed)
        inputs["val_suite"] = sampled_suite(inputs["val_suite"], args.val_samples, work / "val")
        val_suite = load_suite(inputs["val_suite"])
        n_rows = sum(len(d.texts) for d in load_datasets(val_suite))
        recipe = expanded_inputs(inputs["config"], work / "expanded")
        rng = np.random.default_rng(args.seed)
        paper, hm3 = speed_rounds(args, inputs, work, recipe, val_suite, rng)
        check = {}
        if args.prune_trials:
            runs = {
                p: hm3_search(inputs, work / f"prune-{p}", args.prune_trials, args, p, args.seed)
                for p in (True, False)
            }
            print(
                f"\npruning check ({args.prune_trials} trials, seed {args.seed}): "
                f"--prune {runs[True]['wall']:.1f} s, --no-prune {runs[False]['wall']:.1f} s "
                f"({runs[False]['wall'] / runs[True]['wall']:.2f}×); "
                f"{pruning_check(runs[True]['rows'], runs[False]['rows'])}"
            )
            check = {f"pruning check, {flag}": [runs[p]]
                     for p, flag in ((False, "--no-prune"), (True, "--prune"))}  # fmt: skip
            if args.dtype != "float32":
                exact = hm3_search(inputs, work / "prune-f32", args.prune_trials, args, False,
                                   args.seed, dtype="float32")  # fmt: skip
                check["pruning check, --no-prune in float32"] = [exact]
                print(f"{args.dtype} against float32: {dtype_check(runs[False], exact)}")
            # the paper way again, so that its mean spans the pruning check's minutes too
            paper += paper_trials(recipe, args.paper_trials, rng, work, val_suite)
        report(args, paper, hm3, check, n_rows)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
