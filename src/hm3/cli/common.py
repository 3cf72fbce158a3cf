"""What the ``hm3`` commands share: consoles, the run options (declared once and added to a
command by :func:`with_run_options`), ``NAME=DIR`` pairs, printing a fit.

Only argument declarations, parsing of command-line values and output formatting live here;
see :mod:`hm3.cli.app`.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions

from hm3.defaults import AUTO_RIDGE, AUTO_SCALE, DEFAULT_RIDGE, DEFAULT_SCALE
from hm3.errors import Hm3Error
from hm3.io.paths import dir_name
from hm3.options import DEVICE_RULE, DTYPES, RUN_FIELDS, RunOptions
from hm3.options import run_options as make_run_options

if TYPE_CHECKING:
    from hm3.alignment.result import AlignResult


class _LogConsole(Console):
    """A console that, written to a pipe or a file (a log, CI), lays tables out 200 columns
    wide, not Rich's 80 that would cut ``hm3 bench``'s ten columns to ``syst…``; a table
    narrower than that keeps its own width. On a terminal, or with ``COLUMNS`` set, as Rich."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or self.is_jupyter or "COLUMNS" in os.environ:
            return size
        return ConsoleDimensions(max(size.width, 200), size.height)


# no emoji: ":smile:" in a text or a name is printed as typed
out_console = _LogConsole(emoji=False)
err_console = _LogConsole(stderr=True, emoji=False)
# a pipe or a log file gets each message on one line, never cut at 80 columns mid-number
# (a terminal wraps long lines itself)
for _console in (out_console, err_console):
    _console.soft_wrap = not _console.is_terminal

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (must not exist).")]
ConfigArg = Annotated[Path, typer.Argument(help="Merge config (YAML).")]

# The run options (hm3.options.RunOptions), declared once; each verb gives its own defaults.
DeviceOpt = Annotated[
    str, typer.Option("--device", help=f"Where to run: {DEVICE_RULE}.", show_default=False)
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help=f"Weight dtype: {', '.join(DTYPES)} (default: the config's)."),
]
# the same run option where a model is only run: the dtype it computes in
ComputeDtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help=f"Run the models in this dtype: {', '.join(DTYPES)}. bfloat16 is faster on GPUs and "
        "on CPUs with AVX-512 BF16 or AMX, float16 on GPUs; either can change a few decisions.",
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Texts per forward pass.")]
MaxLengthOpt = Annotated[
    int,
    typer.Option(
        "--max-length",
        min=1,
        help="Tokens the model reads per text, special tokens included (per window where long "
        "texts are read in windows; else longer texts are truncated).",
    ),
]
ProgressOpt = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress bars (on a terminal).")
]
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


_RUN_OPTS = {
    "device": DeviceOpt,
    "dtype": DtypeOpt,
    "batch_size": BatchOpt,
    "max_length": MaxLengthOpt,
    "force": ForceOpt,
    "allow_pickle": PickleOpt,
    "progress": ProgressOpt,
}


def _evaluated(param: inspect.Parameter, namespace: Mapping[str, Any]) -> inspect.Parameter:
    """``param`` with its annotation evaluated, as ``inspect.signature(eval_str=True)`` does (the
    commands use ``from __future__ import annotations``)."""
    if not isinstance(param.annotation, str):
        return param
    return param.replace(annotation=eval(param.annotation, dict(namespace)))


def with_options(
    added: Mapping[str, tuple[Any, Any]], replaced: Sequence[str], build: Callable[..., dict]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: a typer command with the options ``added`` (name → (Annotated type, default))
    at the end of its parameters in place of its own ``replaced`` ones, which it receives as
    ``build(**values of added)`` computes them. Stacks: the outer one sees the inner's options."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(command)
        ns = getattr(inspect.unwrap(command), "__globals__", {})
        own = [_evaluated(p, ns) for p in sig.parameters.values() if p.name not in replaced]
        new = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=value)
            for name, (kind, value) in added.items()
        ]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in added if name in kwargs}
            return command(*args, **kwargs, **build(**values))

        # before the options of an inner decorator, so that --help lists them in stacking order
        kw = inspect.Parameter.KEYWORD_ONLY
        params = [p for p in own if p.kind != kw] + new + [p for p in own if p.kind == kw]
        wrapper.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        return wrapper

    return decorate


def with_run_options(
    fixed: Mapping[str, Any] | None = None, /, **defaults: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the run options named in ``defaults`` (``device="cpu"``, ``batch_size=32``,
    ...) as options of the command, with those defaults, and the
    :class:`~hm3.options.RunOptions` they make (plus ``fixed`` values) as its ``options``.

    ``dtype=None`` is a merge's output dtype (default: the config's); ``dtype="float32"`` is the
    dtype a command that only runs models computes in."""
    added = {name: (_RUN_OPTS[name], value) for name, value in defaults.items()}
    if defaults.get("dtype") is not None:  # a dtype to compute in, not a checkpoint's to write
        added["dtype"] = (ComputeDtypeOpt, defaults["dtype"])
    return with_options(
        added, ("options",), lambda **given: {"options": run_options(given, **(fixed or {}))}
    )


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


def split_named(spec: str, option: str, *, task: bool = True) -> tuple[str | None, str]:
    """``NAME=PATH`` as ``(NAME, PATH)``; a plain ``PATH`` as ``(None, PATH)``. A ``=`` is part
    of the path where the whole exists, or, for a ``task`` name, where the part before it holds
    a ``/`` (a task name never does: ``runs/lr=1e-5`` is a path; a display name may)."""
    name, sep, path = spec.partition("=")
    slash = task and ("/" in name or os.sep in name)
    if not sep or slash or Path(spec).expanduser().exists():
        return None, spec
    if not name or not path:
        raise Hm3Error(f"{option} {spec}: expected NAME=DIR with a name and a directory")
    return name, path


def parse_named_paths(specs: Sequence[str], option: str, *, need_name: bool) -> dict[str, Path]:
    """Command-line ``NAME=DIR`` (or ``DIR``, named after the directory) pairs, in order.

    Args:
        specs: the arguments as given.
        option: the option or argument they came from, for messages.
        need_name: refuse a bare ``DIR``.
    """
    out: dict[str, Path] = {}
    for spec in specs:
        named, path = split_named(spec, option, task=need_name)  # MODEL: a display name
        if named is None and need_name:
            raise Hm3Error(f"{option} {spec}: expected TASK=DIR, e.g. toxicity=models/toxicity")
        name = named or dir_name(path)
        if name in out:
            fix = "give each a name of its own" if named else "name one with NAME=DIR"
            raise Hm3Error(f"{option} {spec}: name {name!r} given twice; {fix}")
        out[name] = Path(path)
    return out


def count_of(n: int, noun: str) -> str:
    """``1 thread``, ``4 threads``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
        f"aligned {count_of(len(result.tasks), 'task')} on {count_of(result.n_texts, 'text')} "
        f"({fit}) → {result.path} ({result.seconds:.1f} s)",
        highlight=False,
    )
