"""Write a ``.safetensors`` file one tensor at a time, in a declared order.

The ``safetensors`` package writes only a whole dict at once; a streaming merge must not hold
the output model in memory, so :class:`SafetensorsWriter` writes the header from declared
specs first and appends each tensor's bytes as it comes. Reading is :mod:`hm3.io.checkpoint`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

import torch

from hm3.io.checkpoint import ST_DTYPES, numel

_ST_NAMES = {dtype: name for name, dtype in ST_DTYPES.items()}


class SafetensorsWriter:
    """Write a ``.safetensors`` file tensor by tensor, in a declared order.

    The header (names, dtypes, shapes, offsets) is written first from the declared specs; each
    :meth:`write` appends one tensor's bytes. :meth:`close` checks that every tensor came; used
    as a context manager, it checks only when the block ends without an error.
    """

    def __init__(
        self,
        path: Path,
        specs: list[tuple[str, tuple[int, ...], torch.dtype]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        for name, shape, dtype in specs:
            size = numel(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {
                "dtype": _ST_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self._specs = specs
        self._next = 0
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected, shape, dtype = self._specs[self._next]
        if name != expected or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise RuntimeError(
                f"writer expected {expected} {shape} {dtype}, got {name} "
                f"{tuple(tensor.shape)} {tensor.dtype}"
            )
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._file.write(memoryview(data.numpy()))
        self._next += 1

    def close(self) -> None:
        """Close the file; raise if not every declared tensor was written."""
        self._file.close()
        if self._next != len(self._specs):
            raise RuntimeError(f"writer closed after {self._next} of {len(self._specs)} tensors")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller's error wins; the partial file is discarded with its directory
            self._file.close()
