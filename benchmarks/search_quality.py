"""Benchmark: what ``hm3 search`` finds on the demo zoo, scored on the demo's test suite.

For one demo case it writes the search's inputs (:func:`_common.search_inputs`: the demo's
DARE-TIES recipe, the validation suite cut from the validation splits, the demo's
``suite.yaml`` as the test suite, the case's unlabeled texts), adds a search space, runs
``hm3 search`` (a subprocess, its output shown as it goes), then scores on every row of the
test suite (``--on val``: of the validation suite), side by side: the originals, the demo's
unsearched DARE-TIES (density 0.3, the demo's column), the search's ``best/`` and any other
search's ``best/`` given with ``--compare`` (e.g. a labelled search against a label-free one).
The originals' logits come from the zoo's memo (:class:`hm3.demo.memo.MemoLogits`), as in
``hm3 demo``. Each model's difference from the originals comes with its 95 % paired bootstrap
interval (``--bootstrap N`` redraws of every dataset's rows, :mod:`hm3.evaluation.bootstrap`):
how far apart the suite can tell two models.

Spaces (``--space``):

* ``paper``: no ``search:`` block, so ``hm3 search``'s default, the paper's Algorithm 3 (one
  DARE-TIES density for all models from Beta(1.2, 2), nothing else searched, no alignment);
* ``wide``: the method (dare_ties, ties, tsv), a density and a weight per model, TSV's λ,
  head alignment on the case's unlabeled texts, and the body scale;
* ``tsv``: aligned TSV-Merge only (the method most ``wide`` trials chose at four tasks): a
  weight per model, λ and the body scale.

``--align-texts N`` aligns on N texts drawn evenly from the train splits of the case's tasks
(seeded, as ``align_ablation.py``'s ``all N`` sets) instead of the demo's 100 per task. With
``--align-per-task`` each task's head is fitted on its own share of them only (N / tasks texts of
its train split; ``align.texts: {TASK: FILE}``).

It asserts nothing; the trial counts and the numbers are printed with the command.

Usage::

    python benchmarks/search_quality.py --case case1 --trials 40 --out runs/case1-paper
    python benchmarks/search_quality.py --case all4 --space wide --trials 30 --sampler tpe \\
        --out runs/all4-wide
    python benchmarks/search_quality.py --case all4 --space wide --objective agreement \\
        --out runs/all4-agree --compare runs/all4-wide
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from _common import (
    add_cache,
    demo_max_length,
    draw_texts,
    markdown_table,
    new_parser,
    print_record,
    run_record,
    search_inputs,
    shuffled_pools,
    write_texts,
)


def space(name: str, texts: Path | dict[str, Path]) -> dict:
    """The YAML blocks that make a search space (``paper``: none, the CLI's default).

    Alignment reads ``demo_max_length()`` tokens per text, as ``hm3 demo`` aligns and the
    search scores (``align.max_length`` would otherwise default to 512).
    """
    if name == "paper":
        return {}
    files = {k: str(v) for k, v in texts.items()} if isinstance(texts, dict) else str(texts)
    align = {"texts": files, "max_length": demo_max_length()}
    if name == "tsv":
        return {
            "merge_method": "tsv",
            "search": {
                "weight": {"log_uniform": [0.5, 2], "per_model": True},
                "lambda": {"uniform": [0.8, 1.8]},
            },
            "align": {**align, "scale": {"uniform": [0.75, 2]}},
        }
    return {
        "search": {
            "merge_method": ["dare_ties", "ties", "tsv"],
            "density": {"beta": [1.2, 2], "per_model": True},
            "weight": {"log_uniform": [0.5, 2], "per_model": True},
            "lambda": {"uniform": [0.8, 1.6]},
        },
        "align": {**align, "scale": {"uniform": [0.5, 2]}},
    }


def align_texts(args, work: Path) -> Path | dict[str, Path]:
    """``--align-texts`` texts drawn evenly from the case's tasks' train splits (with
    ``--align-per-task``: each task's share in a file of its own, task → file)."""
    from hm3.demo.cases import CASES
    from hm3.demo.data.prepare import prepare_data

    case = next(c for c in CASES if c.name == args.case)
    pools = shuffled_pools(prepare_data(args.cache, seed=args.seed), args.seed)
    n = args.align_texts
    if args.align_per_task:
        share = n // len(case.tasks)
        return {t: write_texts(work / f"{args.case}-align-{t}-{share}.jsonl",
                               draw_texts(pools, [t], share)) for t in case.tasks}  # fmt: skip
    return write_texts(work / f"{args.case}-align-{n}.jsonl", draw_texts(pools, case.tasks, n))


def run_search(args, inputs: dict[str, Path]) -> None:
    """``hm3 search`` on the inputs, output streamed; exits if it fails."""
    cmd = ["hm3", "search", str(inputs["config"]), "--trials", str(args.trials)]
    if args.objective == "agreement":
        cmd += ["--objective", "agreement", "--texts", str(inputs["texts"])]
    else:
        cmd += ["--suite", str(inputs["val_suite"]), "--val-samples", str(args.val_samples)]
    searched = args.test_samples if args.search_test_samples is None else args.search_test_samples
    if searched:  # the search's own test score of each new best (the table below is separate)
        cmd += ["--test-suite", str(inputs["test_suite"]), "--test-samples", str(searched)]
    cmd += ["--sampler", args.sampler, "--seed", str(args.seed), "--out", str(args.out)]
    # the tokens the zoo was trained with and the table below is scored with
    cmd += ["--max-length", str(demo_max_length()), "--batch-size", "16"]
    if args.timeout:
        cmd += ["--timeout", args.timeout]
    if args.prune:
        cmd += ["--prune"]
    if args.resume:
        cmd += ["--resume"]
    print("search command: " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode:
        sys.exit("hm3 search failed")


def unsearched(config: Path, out: Path) -> Path:
    """The demo's DARE-TIES merge of the case (the recipe without its search space)."""
    from hm3.merging.config import MergeConfig
    from hm3.recipe import merge

    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    plain = {k: v for k, v in doc.items() if k not in ("search", "align")}
    if not (out / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        merge(MergeConfig.from_dict(plain, source=str(config)), out, progress=False)
    return out


def score(args, inputs: dict[str, Path], models: dict[str, Path]) -> None:
    """Every model and the originals on every row of the test (or validation) suite; prints the
    table and each model's difference from the originals with its paired bootstrap interval."""
    from hm3.demo.memo import MemoLogits
    from hm3.evaluation.run import evaluate
    from hm3.evaluation.scoring import ORIGINAL
    from hm3.evaluation.suite import load_suite
    from hm3.model.classifier import load

    length = demo_max_length()
    doc = yaml.safe_load(inputs["config"].read_text(encoding="utf-8"))
    originals = {}
    for entry in doc["models"]:
        path = Path(entry["model"])
        store = path.with_name(f"{path.name}.logits-{length}.npz")
        originals[entry["name"]] = MemoLogits(load(path, max_length=length), store)
    missing = [name for name, path in models.items() if not (path / "config.json").is_file()]
    for name in missing:
        print(f"{name}: {models[name]} has no model (the search wrote no best/); left out")
    loaded = {n: load(p, max_length=length) for n, p in models.items() if n not in missing}
    limit = args.test_samples if args.on == "test" else args.val_samples
    suite = load_suite(inputs[f"{args.on}_suite"]).model_copy(update={"limit": limit})
    result = evaluate(
        suite, loaded, originals=originals, batch_size=16, progress=False, bootstrap=args.bootstrap
    )
    for memo in originals.values():
        with contextlib.suppress(OSError):
            memo.save()
    tasks = list(originals)
    rows = []
    for m in result.models:
        f1 = {t.task: t.f1 for t in m.tasks}
        rows.append([m.name, f"{m.average_f1:.4f}", *(f"{f1[t]:.4f}" for t in tasks)])
    base = result.model(ORIGINAL).average_f1
    print(f"\n{args.case}: {args.on} suite, every row (≤ {limit} per dataset)\n")
    print(markdown_table(["model", "average F1", *tasks], rows, (False, *[True] * len(rows[0]))))
    for m in result.models:
        if m.name == ORIGINAL:
            continue
        line = f"{m.name}: {m.average_f1 - base:+.4f} against the originals' {base:.4f}"
        if (vs := m.vs_original) is not None:
            line += (
                f" (95% paired bootstrap interval [{vs.low:+.4f}, {vs.high:+.4f}] over "
                f"{vs.draws} redraws; above 0 in {vs.above:.0%} of them)"
            )
        print(line)


def parse_args(argv: list[str] | None = None):
    parser = new_parser(__doc__)
    add_cache(parser)
    parser.add_argument("--case", default="case1", help="demo case: case1, case2, all4")
    parser.add_argument("--space", choices=("paper", "wide", "tsv"), default="paper")
    parser.add_argument(
        "--align-texts",
        type=int,
        help="align on N texts from the case's train splits (default: the demo's unlabeled texts)",
    )
    parser.add_argument(
        "--align-per-task",
        action="store_true",
        help="with --align-texts: fit each task's head on its own share of them only",
    )
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--timeout", help="hm3 search --timeout (e.g. 14m)")
    parser.add_argument("--objective", choices=("f1", "agreement"), default="f1")
    parser.add_argument("--sampler", default="paper", help="paper, random, tpe, cmaes")
    parser.add_argument("--val-samples", type=int, default=600)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument(
        "--search-test-samples",
        type=int,
        help="rows per dataset the search scores each new best on (default --test-samples; "
        "0: none); the final table always uses --test-samples",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--on",
        choices=("test", "val"),
        default="test",
        help="the suite the final table scores (val: every validation row, ≤ --val-samples)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="paired bootstrap redraws for each model's difference from the originals (0: none)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the search's --out")
    parser.add_argument("--prune", action="store_true", help="pass --prune to hm3 search")
    parser.add_argument(
        "--no-baseline", action="store_true", help="leave the unsearched DARE-TIES out"
    )
    parser.add_argument("--resume", action="store_true", help="pass --resume to hm3 search")
    parser.add_argument(
        "--score-only", action="store_true", help="score an existing --out, no search"
    )
    parser.add_argument(
        "--compare", type=Path, action="append", default=[], help="another search's --out"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_record(run_record("search_quality.py", argv))
    work = args.out.with_name(f"{args.out.name}-inputs").resolve()  # the YAML names them whole
    inputs = search_inputs(args.cache, work, args.case, args.seed)
    doc = yaml.safe_load(inputs["config"].read_text(encoding="utf-8"))
    if args.align_per_task and not args.align_texts:
        sys.exit("--align-per-task: give --align-texts N (N / tasks texts per task)")
    texts = align_texts(args, work) if args.align_texts else inputs["texts"]
    doc.update(space(args.space, texts))
    if args.space == "tsv":  # the demo recipe's DARE-TIES density is not a TSV-Merge parameter
        doc.pop("parameters", None)
    inputs["config"].write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    if not args.score_only:
        run_search(args, inputs)
    models = {}
    if not args.no_baseline:
        models["dare_ties (density 0.3)"] = unsearched(inputs["config"], work / "dare_ties")
    models[f"search ({args.out.name})"] = args.out / "best"
    for other in args.compare:
        models[f"search ({other.name})"] = other / "best"
    score(args, inputs, models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
