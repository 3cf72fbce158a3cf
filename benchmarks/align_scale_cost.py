"""What ``--scale auto`` costs: ``hm3 align`` on one merge with the body as merged and with
the scale chosen from the grid, timed side by side in one run.

Each repeat runs plain alignment, then ``--scale auto``, on the same texts; the fastest run of
each is kept and their ratio printed (``docs/results/scale.md``). It asserts nothing.

Usage::

    python benchmarks/align_scale_cost.py MERGED TEXTS [--max-length 64] [--repeats 1]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import demo_max_length, new_parser, print_record, run_record

from hm3.alignment.api import align
from hm3.alignment.scale import SCALE_GRID


def main() -> int:
    parser = new_parser(__doc__)
    parser.add_argument("merged", type=Path, help="a merged model directory")
    parser.add_argument("texts", type=Path, help="unlabeled texts (.jsonl/.csv/.parquet)")
    length = demo_max_length()
    parser.add_argument(
        "--max-length", type=int, default=length, help=f"tokens per text (the demo's {length})"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (default 1)")
    args = parser.parse_args()
    print_record(run_record("align_scale_cost.py"))
    seconds: dict[str, list[float]] = {"1": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for scale in ("1", "auto"):  # interleaved, so drift hits both alike
                started = time.perf_counter()
                result = align(
                    args.merged,
                    args.texts,
                    Path(tmp) / f"{scale}-{i}",
                    scale=1.0 if scale == "1" else "auto",
                    max_length=args.max_length,
                    device="cpu",
                    progress=False,
                )
                seconds[scale].append(time.perf_counter() - started)
                print(f"scale {scale}: {seconds[scale][-1]:.1f} s (chose {result.scale:g})")
    plain, auto = min(seconds["1"]), min(seconds["auto"])
    print(
        f"\n{result.n_texts} texts, {len(result.tasks)} originals, {len(SCALE_GRID)} scales: "
        f"plain {plain:.1f} s, --scale auto {auto:.1f} s, ratio {auto / plain:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
