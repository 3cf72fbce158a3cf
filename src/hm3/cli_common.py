"""What the ``hm3`` commands share: the consoles, the common options, printing a fit.

Only argument declarations and output formatting live here; see :mod:`hm3.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from hm3.alignment import AlignResult

out_console = Console()
err_console = Console(stderr=True)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (must not exist).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")]
PickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle", help="Accept pickled .bin weights (loaded with weights_only=True)."
    ),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
MaxLengthOpt = Annotated[
    int, typer.Option("--max-length", min=1, help="Truncate texts to this many tokens.")
]


DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available).")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Texts per forward pass.")]


def print_alignment(result: AlignResult) -> None:
    for task in result.tasks:
        err_console.print(
            f"  {task.name}: logit RMSE vs {task.original}: {task.rmse_before:.4g} → "
            f"{task.rmse_after:.4g}",
            highlight=False,
            soft_wrap=True,
        )
    err_console.print(
        f"aligned {len(result.tasks)} task(s) on {result.n_texts} texts (ridge {result.ridge:g}, "
        f"λ {result.lam:.3g}) → {result.path} ({result.seconds:.1f} s)",
        highlight=False,
    )
