"""The options of one run, shared by every command and the library, and the rules they follow.

- :class:`RunOptions`: device, dtype, batch size, max length, progress, force, allow-pickle; one
  frozen object passed through instead of seven keyword arguments.
- **The device rule**, everywhere (commands and library alike): hm3 runs on the CPU unless asked.
  ``cuda`` (or ``cuda:N``) asks for a GPU and is refused where there is none; ``auto`` takes CUDA
  when present. The default is the CPU because a merge's random draws come from a generator on
  the device that runs it: the same recipe gives the same bytes on every machine only if the
  device is chosen, not found.
- :data:`DTYPES`: the one table of weight dtypes hm3 reads and writes.
- :func:`number_or_auto`: the one rule for values such as ``ridge`` and ``scale``.

No torch import at module level: the command line imports this to build its help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hm3.errors import Hm3Error

if TYPE_CHECKING:
    import torch

AUTO = "auto"
DEVICES = ("cpu", "cuda", AUTO)
DEFAULT_DEVICE = "cpu"
# name -> torch dtype attribute; the first is the default
DTYPES: dict[str, str] = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
DTYPE_NAMES = tuple(DTYPES)


def torch_dtype(name: str | None) -> torch.dtype:
    """The torch dtype of a :data:`DTYPES` name (``None``: float32)."""
    import torch

    return getattr(torch, DTYPES[check_dtype(name or DTYPE_NAMES[0])])


def check_dtype(name: str, flag: str = "--dtype") -> str:
    if name not in DTYPES:
        raise Hm3Error(f"{flag} {name}: expected one of {', '.join(DTYPE_NAMES)}")
    return name


def resolve_device(device: str | None) -> str:
    """The device rule: ``None``/``cpu`` → cpu; ``auto`` → cuda when present; ``cuda[:N]`` checked.

    Raises:
        Hm3Error: an unknown device, or CUDA asked for where there is none.
    """
    name = (device or DEFAULT_DEVICE).strip().lower()
    if name == AUTO:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise Hm3Error(f"--device {device}: expected cpu, cuda, cuda:N or auto")
    import torch

    if not torch.cuda.is_available():
        raise Hm3Error(f"--device {device}: CUDA is not available here; use --device cpu")
    return name


def number_or_auto(
    value: Any, name: str, *, minimum: float = 0.0, strict: bool = False, default: Any = None
) -> float | str:
    """A finite number (``> minimum`` if ``strict``, else ``>= minimum``) or ``"auto"``.

    Strings are parsed (``"0.03"``, ``" Auto "``); ``None`` gives ``default``. The error names
    ``name`` (``--ridge``, ``align.scale``) and the accepted values.
    """
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        if value.strip().lower() == AUTO:
            return AUTO
        try:
            value = float(value)
        except ValueError:
            value = math.nan
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        extra = f" (default {default})" if default is not None else ""
        raise Hm3Error(f"{name} {value}: expected a finite number {bound} or {AUTO}{extra}")
    return float(value)


@dataclass(frozen=True)
class RunOptions:
    """How to run: where, in what precision, in what batches, and what a run may do to files.

    Attributes:
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto`` (see the device rule above);
            :meth:`resolved` turns ``auto`` into a device.
        dtype: weight dtype for models loaded or written (``None``: the checkpoint's or float32).
        batch_size: texts per forward pass.
        max_length: tokens per text (longer texts are truncated or windowed by the caller).
        progress: show progress bars.
        force: replace an existing output directory.
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
        if self.dtype is not None:
            check_dtype(self.dtype)
        if self.batch_size < 1:
            raise Hm3Error(f"--batch-size {self.batch_size}: expected a whole number >= 1")
        if self.max_length < 1:
            raise Hm3Error(f"--max-length {self.max_length}: expected a whole number >= 1")

    def resolved(self) -> RunOptions:
        """These options with the device rule applied (raises if CUDA is asked for and absent)."""
        return replace(self, device=resolve_device(self.device))

    def with_(self, **changes: Any) -> RunOptions:
        """A copy with some options changed (``options.with_(force=True)``)."""
        return replace(self, **changes)
