"""Benchmark: the bootstrap's macro-F1 from confusion counts against scikit-learn's f1_score.

``hm3 evaluate --bootstrap N`` scores every (model, task) N times.
:func:`hm3.evaluation.bootstrap.macro_f1` counts each redraw's confusion matrix with
``np.bincount`` instead of calling ``f1_score``. This script times both on the same redraws
of one synthetic task (6,000 rows, 3 labels, 4 columns: more rows than any task of the demo's
suite, where prompt_attack pools about 3,700), checks that they agree to 1e-12 (exit status 1
if not), and prints the ratio (``docs/results/evaluation-speed.md``).

Usage::

    python benchmarks/bootstrap_speed.py [--draws 1000]
"""

from __future__ import annotations

import time

import numpy as np
from _common import new_parser, print_record, run_record
from sklearn.metrics import f1_score

from hm3.evaluation.bootstrap import macro_f1


def main(argv: list[str] | None = None) -> int:
    parser = new_parser(__doc__)
    parser.add_argument("--draws", type=int, default=1000, help="redraws per column (1000)")
    parser.add_argument("--rows", type=int, default=6000, help="rows of the task (6000)")
    args = parser.parse_args(argv)
    print_record(run_record("bootstrap_speed.py", argv))
    rng = np.random.default_rng(0)
    k, n = 3, args.rows
    y_true = rng.integers(0, k, n)
    columns = [np.where(rng.random(n) < 0.7, y_true, rng.integers(0, k, n)) for _ in range(4)]
    draws = [rng.integers(0, n, n) for _ in range(args.draws)]
    started = time.perf_counter()
    ours = [
        macro_f1(np.bincount(y_true[d] * k + y[d], minlength=k * k).reshape(k, k))
        for y in columns
        for d in draws
    ]
    fast = time.perf_counter() - started
    started = time.perf_counter()
    theirs = [
        f1_score(y_true[d], y[d], average="macro", zero_division=0) for y in columns for d in draws
    ]
    slow = time.perf_counter() - started
    worst = float(np.max(np.abs(np.array(ours) - np.array(theirs))))
    print(f"{len(ours)} scores of {n} rows: confusion counts {fast:.2f} s, f1_score {slow:.2f} s")
    print(f"ratio f1_score / counts: {slow / fast:.1f}x; largest difference {worst:.1e}")
    return 0 if worst < 1e-12 else 1


if __name__ == "__main__":
    raise SystemExit(main())
