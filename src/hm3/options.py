"""The options of one run, shared by every command and the library, and the rules they follow.

- :class:`RunOptions`: device, dtype, batch size, max length, progress, force, allow-pickle; one
  frozen object passed through instead of seven keyword arguments. :func:`run_options` builds
  it from what a public function was given (``options=`` and/or field names as keywords).
- **The device rule**, everywhere (commands and library alike): hm3 runs on the CPU unless asked.
  ``cuda`` (or ``cuda:N``) asks for a GPU and is refused where there is none; ``auto`` takes CUDA
  when present. The default is the CPU because a merge's random draws come from a generator on
  the device that runs it: the same recipe gives the same bytes on every machine only if the
  device is chosen, not found. :func:`resolve_device` applies it.
- :data:`DTYPES`: the one table of weight dtypes hm3 reads and writes (:data:`DtypeName` is the
  same list as a type, for pydantic models).
- :func:`number_or_auto`: the one rule for values such as ``ridge`` and ``scale``.

No torch import at module level: the command line imports this to build its help. Nothing here
loads, runs or writes anything.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from hm3.errors import Hm3Error, spell

if TYPE_CHECKING:
    import torch

AUTO = "auto"
DEFAULT_DEVICE = "cpu"
_AUTO_IS = "CUDA when present"
DEVICE_RULE = f"cpu (default), cuda, cuda:N or auto: {_AUTO_IS}"
# The weight dtypes, by their torch names; the first is the default.
DtypeName = Literal["float32", "float16", "bfloat16"]
DTYPES: tuple[str, ...] = get_args(DtypeName)


def option_name(name: str) -> str:
    """How a message names an option given as its flag (``--max-texts``): the flag while a CLI
    command runs, else the keyword it stands for (``max_texts``); any other name as it is."""
    return spell(name, name[2:].replace("-", "_")) if name.startswith("--") else name


def named(flag: str, keyword: str, value: Any) -> str:
    """How a message names an option set to ``value``: ``flag``, the command line's words
    (``--stride 0``), while a CLI command runs, else ``keyword=value`` as Python writes it
    (``stride=0``; a path as its string: ``out='merged'``)."""
    shown = os.fspath(value) if isinstance(value, os.PathLike) else value
    return spell(flag, f"{keyword}={shown!r}")


def check_dtype(name: str, flag: str = "--dtype") -> str:
    """``name`` if it is one of :data:`DTYPES`, else an error naming ``flag``."""
    if name not in DTYPES:
        raise Hm3Error(f"{option_name(flag)} {name!r}: expected one of {', '.join(DTYPES)}")
    return name


def torch_dtype(name: str | None) -> torch.dtype:
    """The torch dtype of a :data:`DTYPES` name (``None``: float32)."""
    import torch

    return getattr(torch, check_dtype(name or DTYPES[0]))


def check_device(device: str | None) -> str:
    """A device name in the rule's form (``cpu``, ``cuda``, ``cuda:N``, ``auto``), lower-cased;
    ``None`` gives the default. Checks only the spelling: :func:`resolve_device` checks CUDA.

    Anything but a string is refused, not read as the CPU: ``0`` means GPU 0 to torch."""
    if device is None:
        return DEFAULT_DEVICE
    if not isinstance(device, str):
        raise Hm3Error(
            f"device {device!r}: expected a string such as 'cpu', 'cuda' or 'cuda:0', not "
            f"{type(device).__name__} (GPU N is 'cuda:N')"
        )
    name = device.strip().lower()
    if name in ("cpu", "cuda", AUTO) or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    shown = device if name else repr(device)  # an empty name is shown, not left out
    expected = spell(
        "cpu or cuda (cuda:N: GPU N), or auto", "'cpu' or 'cuda' ('cuda:N': GPU N), or 'auto'"
    )
    raise Hm3Error(
        f"{named(f'--device {shown}', 'device', device)}: expected {expected}: {_AUTO_IS}"
    )


def resolve_device(device: str | None) -> str:
    """The device rule: ``None``/``cpu`` → cpu; ``auto`` → cuda when present; ``cuda[:N]`` checked.

    Raises:
        Hm3Error: an unknown device, or CUDA asked for where there is none.
    """
    name = check_device(device)
    if name == "cpu":
        return name
    import torch

    if name == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise Hm3Error(
            f"{named(f'--device {device}', 'device', device)}: CUDA is not available here; use "
            f"{spell('--device cpu', 'device=' + repr(DEFAULT_DEVICE))}"
        )
    return name


def number_or_auto(
    value: Any,
    name: str | None,
    *,
    minimum: float = 0.0,
    strict: bool = False,
    default: float | str | None = None,
) -> float | str:
    """A finite number (``> minimum`` if ``strict``, else ``>= minimum``) or ``"auto"``.

    Strings are parsed (``"0.03"``, ``" Auto "``); ``None`` gives ``default`` when there is one.
    The error names ``name`` (``--ridge``; from Python ``ridge=``, as :func:`named` says) and
    the value as given, what is accepted and the default; with ``name=None`` it says only what
    is accepted, for a pydantic validator (which names the key and the value itself;
    :class:`~hm3.errors.Hm3Error` is a ``ValueError``).
    """
    if value is None and default is not None:
        return default
    number = value
    if isinstance(value, str):
        if value.strip().lower() == AUTO:
            return AUTO
        try:
            number = float(value)
        except ValueError:
            number = math.nan
    ok = isinstance(number, numbers.Real) and not isinstance(number, bool)
    if ok and math.isfinite(number) and (number > minimum if strict else number >= minimum):
        return float(number)
    expected = f"expected a finite number {'>' if strict else '>='} {minimum:g} or {AUTO}"
    if default is not None:
        shown = f"{default:g}" if isinstance(default, float) else default
        expected += f" (default {shown})"
    if name is None:
        raise Hm3Error(expected)
    raise Hm3Error(f"{named(f'{name} {value}', option_name(name), value)}: {expected}")


@dataclass(frozen=True)
class RunOptions:
    """How to run: where, in what precision, in what batches, and what a run may do to files.

    Attributes:
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto`` (the device rule above);
            :meth:`resolved` turns ``auto`` into a device and checks that CUDA is there.
        dtype: weight dtype of the models written (a merge's output) or loaded for inference;
            ``None``: the merge config's, or float32 when loading.
        batch_size: texts per forward pass.
        max_length: tokens per text (longer texts are truncated).
        progress: show progress bars.
        force: replace an existing output directory (once the new one is complete).
        allow_pickle: accept pickled ``.bin`` weights (loaded with ``weights_only=True``).
    """

    device: str = DEFAULT_DEVICE
    dtype: str | None = None
    batch_size: int = 32
    max_length: int = 512
    progress: bool = True
    force: bool = False
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", check_device(self.device))
        if self.dtype is not None:
            check_dtype(self.dtype)
        for name, flag in (("batch_size", "--batch-size"), ("max_length", "--max-length")):
            hint = spell(f" ({flag} N)", "")
            object.__setattr__(self, name, whole_number(getattr(self, name), name, hint))
        for name in ("progress", "force", "allow_pickle"):
            value = getattr(self, name)
            if not isinstance(value, bool):  # "false" is truthy: it would replace an output
                raise Hm3Error(
                    f"{name} {value!r}: expected a bool, not {type(value).__name__}; pass "
                    f"{name}=True or {name}=False"
                )

    def resolved(self) -> RunOptions:
        """These options with the device rule applied (raises if CUDA is asked for and absent)."""
        return replace(self, device=resolve_device(self.device))

    def with_(self, **changes: Any) -> RunOptions:
        """A copy with some options changed (``options.with_(force=True)``)."""
        return run_options(self, changes)


RUN_FIELDS = tuple(f.name for f in fields(RunOptions))


def whole_number(value: Any, name: str, hint: str = "") -> int:
    """``value`` as a plain ``int`` >= 1 (a numpy integer too); anything else is a user error
    naming ``name`` (a flag, ``--max-texts``, is named as :func:`option_name` says; ``hint``
    ends the message)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise Hm3Error(f"{option_name(name)} {value!r}: expected a whole number >= 1{hint}")
    return int(value)


def run_options(
    options: RunOptions | None, run: Mapping[str, Any], unread: Mapping[str, str] | None = None
) -> RunOptions:
    """The options of a call: ``options`` (default :class:`RunOptions`) with ``run`` overriding.

    Public functions take ``options=`` and/or the fields as keywords
    (``hm3.align(..., device="cuda", progress=False)``); this is where both meet. ``unread``
    names the options the call does not read, each with why: one given a value as a keyword is
    refused (in ``options``, shared between calls, it is left alone).

    Raises:
        Hm3Error: ``options`` that is no :class:`RunOptions` (a dict), a keyword that is no
            run option or one the call does not read, or a bad value.
    """
    given = next((name for name in unread or {} if run.get(name) is not None), None)
    if given is not None:
        raise Hm3Error(f"{given}: not read here ({unread[given]}); drop it")
    if options is not None and not isinstance(options, RunOptions):
        raise Hm3Error(
            f"options: expected a hm3.options.RunOptions, got {type(options).__name__}; pass "
            "RunOptions(progress=False, ...), or the options by name (progress=False)"
        )
    unknown = [name for name in run if name not in RUN_FIELDS]
    if unknown:
        raise Hm3Error(
            f"unknown option {unknown[0]!r}; the run options are {', '.join(RUN_FIELDS)}"
        )
    base = options if options is not None else RunOptions()
    return replace(base, **run) if run else base
