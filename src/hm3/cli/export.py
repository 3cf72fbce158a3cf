"""``hm3 export onnx``: a classifier as an ONNX graph with per-task probabilities inside.

A sub-app (``hm3 export FORMAT``), registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit
codes and error printing live there. The work is :func:`hm3.export.api.export_onnx`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hm3.cli.common import (
    OutOpt,
    count_of,
    err_console,
    help_paragraphs,
    out_console,
    with_run_options,
)
from hm3.cli.usage import OneLineUsage
from hm3.options import RunOptions

app = typer.Typer(
    name="export",
    cls=OneLineUsage,
    help="Export a classifier for existing inference engines (ONNX Runtime, Triton, ...).",
    no_args_is_help=True,
)

ModelArg = Annotated[Path, typer.Argument(help="Merged or ordinary classifier directory.")]
QuantizeOpt = Annotated[
    str | None, typer.Option(help="int8: ONNX Runtime dynamic quantization (needs --texts).")
]
OpsetOpt = Annotated[int, typer.Option(help="ONNX opset, 14 to 20.")]
TextsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Texts (.jsonl, .csv, .tsv, .parquet) on which int8 must keep the float decisions."
    ),
]
TextColumnOpt = Annotated[str, typer.Option(help="Column of --texts that holds the texts.")]
MaxTextsOpt = Annotated[int | None, typer.Option(min=1, help="Compare on the first N texts only.")]
PerChannelOpt = Annotated[
    bool,
    typer.Option(
        "--per-channel/--per-tensor",
        help="int8 weight scales per output channel (default) or one per tensor.",
    ),
]
ReduceRangeOpt = Annotated[
    bool,
    typer.Option(
        "--reduce-range/--full-range",
        help="int8 weights in 7 bits (more decisions kept on some models) or the full 8.",
    ),
]
SmoothOpt = Annotated[
    bool,
    typer.Option(
        "--smooth/--no-smooth",
        help="int8: first smooth the float graph on --texts (SmoothQuant: input ranges moved "
        "into the weights, same float function; keeps more decisions).",
    ),
]
FuseOpt = Annotated[
    bool,
    typer.Option(
        "--fuse/--no-fuse",
        help="Fuse attention and layer norms into ONNX Runtime's own operators (on long texts "
        "faster, less memory; ONNX Runtime only), or keep standard ONNX for other engines.",
    ),
]
MinAgreementOpt = Annotated[
    float,
    typer.Option(
        help="Refuse (write nothing) if int8 keeps less than this share of any task's "
        "decisions on --texts; 0 only reports."
    ),
]


@with_run_options(batch_size=32, max_length=512, force=False, allow_pickle=False, progress=True)
def onnx(
    model: ModelArg,
    out: OutOpt,
    quantize: QuantizeOpt = None,
    opset: OpsetOpt = 17,
    fuse: FuseOpt = True,
    texts: TextsOpt = None,
    text_column: TextColumnOpt = "text",
    max_texts: MaxTextsOpt = None,
    per_channel: PerChannelOpt = True,
    reduce_range: ReduceRangeOpt = False,
    smooth: SmoothOpt = True,
    min_agreement: MinAgreementOpt = 0.99,
    *,
    options: RunOptions,
) -> None:
    """Export MODEL to --out as an ONNX graph that returns each task's probabilities.

    --out gets model.onnx (inputs input_ids, attention_mask and, where the model has token
    types, token_type_ids; outputs `logits` and one output per task), the tokenizer files,
    config.json with the hm3 metadata and an `onnx` block, and a README on running it with
    plain onnxruntime or Triton. By default attention and layer norms are fused into ONNX
    Runtime's own operators (com.microsoft domain); --no-fuse keeps standard operators for
    other engines. The float graph is checked against torch before anything is written. With
    --quantize int8 the int8 graph's decisions are compared with the float graph's on --texts,
    task by task, and printed; below --min-agreement nothing is written. Without --quantize, an
    int8 option set away from its default (--texts to --min-agreement) is refused.
    """
    from hm3.export.api import export_onnx
    from hm3.export.card import check_summary

    result = export_onnx(
        model,
        out,
        quantize=quantize,
        opset=opset,
        texts=texts,
        text_column=text_column,
        max_texts=max_texts,
        per_channel=per_channel,
        reduce_range=reduce_range,
        min_agreement=min_agreement,
        smooth=smooth,
        fuse=fuse,
        options=options,
    )
    if result.agreement is not None:
        _print_agreement(result)
    outputs = ", ".join(result.outputs)
    graph = "fused" if result.fused else "standard ONNX" if result.fused is None else "unfused"
    err_console.print(
        f"exported {count_of(len(result.outputs), 'task')} ({result.quantize or 'float32'}, "
        f"{graph}, opset {result.opset}, up to {result.max_length} tokens; outputs logits, "
        f"{outputs}; {check_summary(result.check)}) → {result.path} ({result.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )


def _print_agreement(result) -> None:
    found = result.agreement
    out_console.print(
        f"int8 vs float32 on {found.texts} texts (decision agreement, max |Δp|):", highlight=False
    )
    for task in found.tasks:
        out_console.print(
            f"  {task.task}: {task.agreement:.4f} ({task.changed} changed), "
            f"{task.max_abs_diff:.3f}",
            highlight=False,
        )


app.command(help=help_paragraphs(onnx.__doc__))(onnx)
