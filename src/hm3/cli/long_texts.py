"""The long-text options every scoring command shares: ``--windows``, ``--stride``, ``--combine``,
``--default-label``; what they build (:class:`~hm3.model.windows.Windows`) and the note that says
how long texts were scored.

Commands choose their own default for ``--windows``: ``hm3 predict`` and ``hm3 serve`` score
the whole text (on), ``hm3 evaluate`` and ``hm3 bench`` keep truncation (off) so results stay
comparable with earlier runs and the paper. :func:`with_windows` adds the four options to a
command. Only declarations, parsing and messages live here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hm3.cli.common import with_options
from hm3.errors import Hm3Error

if TYPE_CHECKING:
    from hm3.model.labels import Task
    from hm3.model.windows import Windows

StrideOpt = Annotated[
    int | None,
    typer.Option(
        "--stride",
        min=1,
        help="Long texts: tokens between the starts of consecutive windows (default: 3/4 of a "
        "window, so a quarter overlaps).",
        show_default=False,
    ),
]
CombineOpt = Annotated[
    str,
    typer.Option(
        "--combine",
        help="Long texts, per task: max (the window most confident in a non-default label "
        "decides) or mean (the windows' average).",
    ),
]
DefaultLabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--default-label",
        help="TASK=LABEL: the label meaning 'nothing found' for --combine max (repeat it; "
        "not with --combine mean, which uses none; default: the first of benign, safe, ham, "
        "non_toxic, neutral ... the task has, else its first label).",
        show_default=False,
    ),
]


def windows_option(help_on: bool) -> object:
    """``--windows/--no-windows`` with a help text saying which is this command's default."""
    state = "on" if help_on else "off"
    return typer.Option(
        "--windows/--no-windows",
        help="Score texts longer than --max-length tokens in overlapping windows instead of "
        f"truncating them (default here: {state}).",
    )


def with_windows(on: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the four long-text options on a command (``--windows`` on by default if
    ``on``), which receives the :class:`Windows` they describe (or ``None``) as ``windows``."""
    added = {
        "windows": (Annotated[bool, windows_option(on)], on),
        "stride": (StrideOpt, None),
        "combine": (CombineOpt, "max"),
        "default_label": (DefaultLabelOpt, None),
    }

    def build(windows: bool, stride: int | None, combine: str, default_label: list[str] | None):
        return {"windows": parse_windows(windows, stride, combine, default_label)}

    return with_options(added, ("windows",), build)


def parse_windows(
    enabled: bool, stride: int | None, combine: str, default_label: Sequence[str] | None
) -> Windows | None:
    """The :class:`Windows` the options describe, or ``None`` (truncate) without ``--windows``."""
    from hm3.model.windows import Windows

    given = {}
    for item in default_label or ():
        task, sep, label = item.partition("=")
        if not (sep and task.strip() and label.strip()):
            raise Hm3Error(f"--default-label {item}: expected TASK=LABEL, e.g. guard=benign")
        if "," in label and "=" in label:  # sent=neg,spam=ham
            raise Hm3Error(f"--default-label {item}: one TASK=LABEL each; repeat the option for "
                           "another task")  # fmt: skip
        if task.strip() in given:
            raise Hm3Error(f"--default-label {item}: task {task.strip()!r} is given twice; keep "
                           "one")  # fmt: skip
        given[task.strip()] = label.strip()
    if not enabled:
        if stride is not None or given or combine != "max":
            raise Hm3Error(
                "--stride, --combine and --default-label apply to long texts scored in "
                "windows; add --windows (or drop them)"
            )
        return None
    return Windows(stride=stride, combine=combine, default_labels=given)  # type: ignore[arg-type]


def windows_note(tasks: Sequence[Task], counts: Sequence[int], windows: Windows) -> str | None:
    """One line on the texts that were scored in windows, with each task's default label.

    It is Rich markup, with the task and label names escaped.
    """
    from rich.markup import escape

    from hm3.model.windows import default_labels

    long = [c for c in counts if c > 1]
    if not long:
        return None
    defaults = default_labels(tasks, windows.default_labels)
    shown = escape(", ".join(f"{task}={label}" for task, label in defaults.items()))
    return (
        f"{len(long)} of {len(counts)} texts were longer than one window: scored in "
        f"{sum(long)} windows, combined by {windows.combine}"
        + (f" (default labels: {shown})" if windows.combine == "max" else "")
    )
