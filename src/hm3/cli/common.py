"""What the ``hm3`` commands share: consoles, the run options, ``NAME=DIR`` pairs, printing a fit.

Only argument declarations, parsing of command-line values and output formatting live here;
see :mod:`hm3.cli.app`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from hm3.defaults import AUTO_RIDGE, AUTO_SCALE, DEFAULT_RIDGE, DEFAULT_SCALE
from hm3.errors import Hm3Error
from hm3.options import DEVICE_RULE, DTYPES, RUN_FIELDS, RunOptions
from hm3.options import run_options as make_run_options

if TYPE_CHECKING:
    from hm3.alignment.result import AlignResult

out_console = Console()
err_console = Console(stderr=True)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (must not exist).")]

# The run options (hm3.options.RunOptions), declared once; each verb gives its own defaults.
DeviceOpt = Annotated[
    str, typer.Option("--device", help=f"Where to run: {DEVICE_RULE}.", show_default=False)
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help=f"Weight dtype: {', '.join(DTYPES)} (default: the config's)."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Texts per forward pass.")]
MaxLengthOpt = Annotated[
    int, typer.Option("--max-length", min=1, help="Truncate texts to this many tokens.")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")]
PickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle", help="Accept pickled .bin weights (loaded with weights_only=True)."
    ),
]


def run_options(params: Mapping[str, Any] | None = None, /, **given: Any) -> RunOptions:
    """The :class:`~hm3.options.RunOptions` of a command, from its parameters named like a run
    option (``run_options(locals())`` first thing in a command) and/or given by name; the
    options it does not declare (and a ``--dtype`` not given) keep the library's defaults."""
    values = {k: v for k, v in (params or {}).items() if k in RUN_FIELDS} | given
    return make_run_options(None, {k: v for k, v in values.items() if v is not None})


RidgeOpt = Annotated[
    str | None,
    typer.Option(
        help=f"Ridge relative to the feature scale: a number >= 0, or {AUTO_RIDGE}, each task's "
        f"own by generalised cross-validation (default {DEFAULT_RIDGE}).",
        show_default=False,
    ),
]

ScaleOpt = Annotated[
    str | None,
    typer.Option(
        help="Multiply the merged body's task vector by this before fitting the heads, or "
        f"{AUTO_SCALE}: the factor from 0.5 to 2 whose heads cross-validate best on the texts "
        f"(needs the base model; default {DEFAULT_SCALE:g}: the body as merged).",
        show_default=False,
    ),
]


def help_paragraphs(doc: str | None) -> str:
    """A docstring as command help: dedented, each paragraph on one line."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def parse_named_paths(specs: Sequence[str], option: str, *, need_name: bool) -> dict[str, Path]:
    """Command-line ``NAME=DIR`` (or ``DIR``, named after the directory) pairs, in order.

    Args:
        specs: the arguments as given.
        option: the option or argument they came from, for messages.
        need_name: refuse a bare ``DIR``.
    """
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            if need_name:
                raise Hm3Error(f"{option} {spec}: expected TASK=DIR, e.g. toxicity=models/toxicity")
            name, path = Path(spec).resolve().name, spec
        if not name or not path:
            raise Hm3Error(f"{option} {spec}: expected NAME=DIR with a name and a directory")
        if name in out:
            raise Hm3Error(f"{option} {spec}: name {name!r} given twice; use NAME=DIR to rename")
        out[name] = Path(path)
    return out


def print_alignment(result: AlignResult) -> None:
    for task in result.tasks:
        err_console.print(
            f"  {task.name}: logit RMSE vs {task.original}: {task.rmse_before:.4g} → "
            f"{task.rmse_after:.4g}",
            highlight=False,
            soft_wrap=True,
        )
    if result.lam is None:  # ridge "auto": each task's own
        fit = "ridge auto: " + ", ".join(f"{t.name} {t.ridge:g}" for t in result.tasks)
    else:
        fit = f"ridge {result.ridge:g}, λ {result.lam:.3g}"
    if result.scale_scores is not None:
        tried = len(result.scale_scores)
        fit += f"; body task vector × {result.scale:g}, the best of {tried} scales"
    elif result.scale != 1:
        fit += f"; body task vector × {result.scale:g}"
    err_console.print(
        f"aligned {len(result.tasks)} task(s) on {result.n_texts} texts ({fit}) → {result.path} "
        f"({result.seconds:.1f} s)",
        highlight=False,
    )
