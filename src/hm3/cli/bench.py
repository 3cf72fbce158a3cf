"""``hm3 bench``: time and memory of the N originals against the merged model (paper Table 4).

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; the measuring lives in :mod:`hm3.bench`
(imported only when the command runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hm3.cli.common import count_of, out_console, parse_named_paths, with_run_options
from hm3.cli.long_texts import with_windows
from hm3.options import RunOptions

if TYPE_CHECKING:
    from hm3.bench.api import BenchResult, OnnxMeasure
    from hm3.model.windows import Windows

TextColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--text-column",
        help="The column of --texts holding the texts (default: text; a suite names its own).",
        show_default=False,
    ),
]


@with_run_options(
    batch_size=32, max_length=512, device="cpu", dtype="float32", allow_pickle=False, progress=True
)
@with_windows(False)
def bench(
    merged: Annotated[Path, typer.Option("--merged", help="The merged model directory.")],
    originals: Annotated[
        list[str],
        typer.Option("--originals", help="TASK=DIR: the original classifier of TASK (repeat it)."),
    ],
    texts: Annotated[
        Path | None,
        typer.Option("--texts", help="Texts to classify: a .jsonl/.csv/.tsv/.parquet file."),
    ] = None,
    text_column: TextColumnOpt = None,
    suite: Annotated[
        Path | None, typer.Option("--suite", help="Or: the distinct texts of a suite's datasets.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Use at most this many texts.")
    ] = 1000,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Measured rounds; medians are reported.")
    ] = 5,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU threads of every run (default: the runtime's)."),
    ] = None,
    onnx: Annotated[
        list[Path] | None,
        typer.Option("--onnx", help="An `hm3 export onnx` directory of the merged model (repeat)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    *,
    options: RunOptions,
    windows: Windows | None,
) -> None:
    """Measure load time, inference time and peak memory of the --originals (run one after
    another, as a deployment without hm3 does) and of the --merged model on the same texts,
    batch size, threads and device; each run in a fresh process, warm-up first, rounds
    interleaved, medians reported, with the ratios merged / originals."""
    from hm3.bench.api import bench as run_bench
    from hm3.bench.texts import bench_texts

    by_task = parse_named_paths(originals, "--originals", need_name=True)
    chosen = bench_texts(texts, suite, column=text_column, limit=limit)
    result = run_bench(
        merged,
        by_task,
        chosen,
        options=options,
        repeats=repeats,
        threads=threads,
        windows=windows,
        onnx=onnx or (),
    )
    if json_out:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_bench(result)


def print_bench(result: BenchResult) -> None:
    """The medians and ratios as a table, with the setup under it."""
    from rich.markup import escape

    s = result.setup
    table = Table(
        "system", "load s", "infer s", "infer CPU s", "texts/s", "peak MB", "infer ratio",
        "CPU ratio", "total ratio", "memory ratio",
        title=f"hm3 bench: {count_of(len(s.tasks), 'task')}, {count_of(s.texts, 'text')} (medians "
        f"of {s.repeats})",
    )  # fmt: skip
    rows = [("originals", result.originals, None), ("merged", result.merged, result.ratio)]
    rows += [(f"onnx {name} ({_graph(m)})", m, m.ratio) for name, m in result.onnx.items()]
    for name, m, ratio in rows:
        table.add_row(
            name,
            f"{m.load_s:.2f}",
            f"{m.infer_s:.2f}",
            f"{m.infer_cpu_s:.2f}",
            f"{s.texts / m.infer_s:.0f}" if m.infer_s > 0 else "-",
            f"{m.peak_mb:.0f}",
            *(
                [f"{r:.3f}" for r in (ratio.infer, ratio.infer_cpu, ratio.total, ratio.memory)]
                if ratio
                else ["1"] * 4
            ),
        )
    out_console.print(table)
    others = ", ".join(f"{name} {n}" for name, n in s.max_lengths.items())
    others = f" ({escape(others)})" if others else ""  # runs with another max length
    out_console.print(
        f"limit of the inference ratio: 1/N = {s.limit:.3f}; device {s.device}, torch in "
        f"{s.dtype}, {count_of(s.threads, 'thread')}, batch size {s.batch_size}, max length "
        f"{s.max_length}{others}, long texts {'in windows' if s.windows else 'truncated'}; peak "
        "MB is resident memory above each process's baseline (GPU: allocated)"
    )


def _graph(m: OnnxMeasure) -> str:
    """What an export's graph is: its precision, and fused or standard ONNX."""
    return f"{m.precision}, {'fused' if m.fused else 'standard ONNX'}"
