"""Benchmark: what merging saves at inference on the demo zoo (paper Table 4), with ``hm3 bench``.

What it does: for each case (``case1``: prompt_attack + toxicity, N = 2; ``all4``: the four
tasks, N = 4) it merges the demo's fine-tuned MiniLM originals with the demo's TIES recipe
(density 0.5, :func:`hm3.demo.cases.merge_config`), optionally exports the merged model with
``hm3 export onnx`` (float32, and ``--quantize int8``, whose agreement with the float model on
the benchmark's texts is printed, not enforced), then runs :func:`hm3.bench.api.bench`:
the N originals one after another (torch, float32: a deployment without hm3), the merged model
(torch, float32) and its ONNX exports (ONNX Runtime), each run in a fresh process on the same
texts, batch size, threads and device, one warm-up round, then ``--repeats`` rounds in rotated
order, medians. The texts are the first ``--texts`` distinct texts of the demo's test suite,
taken from its datasets in turns (all tasks' lengths mixed), truncated at the demo's 64 tokens
(``--max-length``: another length, e.g. hm3's own default 512).

It prints the run record, one markdown table per case and the goals of issue 21: merged
inference <= 1.05 x (1/N) of the originals'; the int8 export of the four-task model <= 0.15 x
the four float32 torch originals. It asserts nothing; the numbers depend on the machine and on
what else runs on it (the per-round spread is printed for that reason). Results:
``docs/results/runtime.md``.

Usage::

    python benchmarks/runtime.py                              # case1 and all4, 256 texts
    python benchmarks/runtime.py --cases all4 --texts 512 --repeats 5 --no-onnx
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    add_cache,
    comma_list,
    demo_max_length,
    markdown_table,
    new_parser,
    print_record,
    run_record,
)

GOAL_MERGED = 1.05  # x 1/N
GOAL_INT8 = 0.15  # x the four float32 torch originals, four tasks


def main() -> None:
    parser = new_parser(__doc__)
    add_cache(parser)
    parser.add_argument("--cases", type=comma_list, default=["case1", "all4"])
    parser.add_argument("--texts", type=int, default=256, help="texts per run (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="the demo's 16 (default)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--max-length", type=int, default=demo_max_length(),
        help=f"tokens per text (default: the demo's {demo_max_length()})",
    )  # fmt: skip
    parser.add_argument(
        "--onnx", action=argparse.BooleanOptionalAction, default=True, help="also ONNX Runtime"
    )
    parser.add_argument("--work", type=Path, default=None, help="keep merges/exports here")
    args = parser.parse_args()
    print_record(run_record("runtime.py"))
    work = args.work or Path(tempfile.mkdtemp(prefix="hm3-runtime-"))
    try:
        inputs = demo_inputs(args.cache)
        texts = suite_texts(inputs["suite"], args.texts)
        lengths = token_lengths(inputs["zoo"]["prompt_attack"].path, texts)
        print(
            f"texts: {len(texts)} from the demo test suite; tokens per text median "
            f"{sorted(lengths)[len(lengths) // 2]}, {sum(n > args.max_length for n in lengths)} "
            f"longer than {args.max_length} (truncated)"
        )
        for case in args.cases:
            run_case(case, inputs, texts, work, args)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def demo_inputs(cache: Path | None) -> dict:
    """The demo's base, fine-tuned zoo (cached) and test suite."""
    from hm3.demo.cases import train_zoo
    from hm3.demo.data.prepare import prepare_data
    from hm3.demo.sources.fetch import base_model_dir

    base = base_model_dir(cache)
    data = prepare_data(cache, seed=0)
    zoo = train_zoo(base, data, cache, seed=0, progress=False)
    return {"base": base, "zoo": zoo, "suite": data.suite}


def suite_texts(suite: Path, limit: int) -> list[str]:
    from hm3.bench.texts import bench_texts

    return bench_texts(None, suite, limit=limit)


def token_lengths(model: Path, texts: list[str]) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    return [len(ids) for ids in tok(texts)["input_ids"]]


def run_case(
    case_name: str, inputs: dict, texts: list[str], work: Path, args: argparse.Namespace
) -> None:
    import hm3
    from hm3.bench.api import bench
    from hm3.demo.cases import CASES, METHODS, merge_config
    from hm3.options import RunOptions

    case = next((c for c in CASES if c.name == case_name), None)
    if case is None:
        sys.exit(f"--cases {case_name}: expected one of {', '.join(c.name for c in CASES)}")
    ties = next(m for m in METHODS if m.name == "ties")
    merged = work / f"{case.name}-ties"
    if not merged.exists():
        config = merge_config(case, ties, inputs["base"], inputs["zoo"], seed=0)
        hm3.merge(config, merged, progress=False)
    onnx = export(merged, work, texts, args.max_length) if args.onnx else []
    options = RunOptions(
        device=args.device, batch_size=args.batch_size, max_length=args.max_length,
        progress=False,
    )  # fmt: skip
    result = bench(
        merged,
        {t: inputs["zoo"][t].path for t in case.tasks},
        texts,
        options=options,
        repeats=args.repeats,
        threads=args.threads,
        onnx=[path for _, path in onnx],
    )
    report(case, result, [name for name, _ in onnx])


def export(merged: Path, work: Path, texts: list[str], length: int) -> list[tuple[str, Path]]:
    """``hm3 export onnx`` float32 and int8 of ``merged`` (skipped, with a note, if it fails)."""
    import json

    sample = work / "export-texts.jsonl"
    sample.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), "utf-8")
    out = []
    int8 = ["--quantize", "int8", "--texts", str(sample), "--min-agreement", "0"]
    common = ["--max-length", str(length), "--no-progress"]
    for name, extra in (("fp32", common), ("int8", [*common, *int8])):
        folder = work / f"{merged.name}-onnx-{name}" if length == demo_max_length() else \
            work / f"{merged.name}-onnx-{name}-{length}"  # fmt: skip
        if not folder.exists():
            cmd = [sys.executable, "-c", "from hm3.cli.app import main; main()", "export", "onnx"]
            done = subprocess.run(
                [*cmd, str(merged), "--out", str(folder), *extra], capture_output=True, text=True
            )
            print(f"hm3 export onnx ({name}):", done.stdout.strip(), done.stderr.strip()[-600:])
            if done.returncode:
                print(f"hm3 export onnx ({name}) failed, skipped: {done.stderr.strip()[-400:]}")
                continue
        out.append((name, folder))
    return out


def report(case, result, onnx_names: list[str]) -> None:
    n = len(case.tasks)
    s = result.setup
    print(f"\n## {case.name}: {case.title} (N = {n})\n")
    print(
        f"{s.texts} texts, batch size {s.batch_size}, max length {s.max_length}, device "
        f"{s.device}, {s.threads} threads; medians of {s.repeats} rounds after a warm-up round\n"
    )
    rows = [("originals (torch fp32, one after another)", result.originals, None, "originals")]
    rows.append(("merged (torch fp32)", result.merged, result.ratio, "merged"))
    for label, (key, m) in zip(onnx_names, result.onnx.items(), strict=True):
        rows.append((f"merged (ONNX Runtime {label})", m, m.ratio, f"onnx:{key}"))
    table = []
    for label, m, ratio, key in rows:
        spread = [r.infer_s for r in result.runs[key]]
        paired = [
            r.infer_s / o.infer_s
            for r, o in zip(result.runs[key], result.runs["originals"], strict=True)
        ]
        table.append([
            label, f"{m.load_s:.2f}", f"{m.infer_s:.2f}",
            f"{min(spread):.2f}-{max(spread):.2f}", f"{m.infer_cpu_s:.2f}",
            f"{s.texts / m.infer_s:.0f}", f"{m.peak_mb:.0f}",
            *([f"{ratio.infer:.3f}", f"{min(paired):.3f}-{max(paired):.3f}",
               f"{ratio.infer_cpu:.3f}", f"{ratio.total:.3f}", f"{ratio.memory:.3f}"]
              if ratio else ["1", "-", "1", "1", "1"]),
        ])  # fmt: skip
    header = [
        "system", "load s", "infer s", "infer range", "infer CPU s", "texts/s", "peak MB",
        "infer / originals", "per-round range", "CPU / originals", "total / originals",
        "memory / originals",
    ]  # fmt: skip
    print(markdown_table(header, table, [False] + [True] * 11))
    goal = GOAL_MERGED / n
    verdict = "met" if result.ratio.infer <= goal else "MISSED"
    print(
        f"\ngoal merged inference <= {GOAL_MERGED} x 1/{n} = {goal:.3f}: "
        f"{result.ratio.infer:.3f} ({verdict})"
    )
    int8 = [m for label, m in zip(onnx_names, result.onnx.values(), strict=True) if label == "int8"]
    if n == 4 and int8:
        verdict = "met" if int8[0].ratio.infer <= GOAL_INT8 else "MISSED"
        print(
            f"goal int8 merged inference <= {GOAL_INT8} x the four fp32 originals: "
            f"{int8[0].ratio.infer:.3f} ({verdict})"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
