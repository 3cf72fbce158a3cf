"""Read checkpoints one tensor at a time; find a model directory from a path or hub id.

A :class:`Checkpoint` is a Hugging Face model directory: ``config.json`` plus weights in
``model.safetensors`` or shards listed in ``model.safetensors.index.json``. Only tensor
headers are read when it is opened; :meth:`Checkpoint.get` loads one tensor. Pickled
``pytorch_model.bin`` weights are refused unless the caller opts in, and are then loaded with
``torch.load(weights_only=True)``.

:mod:`hm3.io.safetensors_writer` writes safetensors files the same way, one tensor at a time.
This module knows nothing about merging or labels.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from hm3.errors import Hm3Error, spell

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"

ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one stored tensor, and the file that holds it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path


class Checkpoint:
    """A model directory opened for streaming reads. Use as a context manager or ``close()``."""

    def __init__(self, path: Path, *, allow_pickle: bool = False, role: str = "model") -> None:
        self.path = Path(path)
        self.role = role
        self.label = f"{role} {self.path}"
        if not self.path.is_dir():
            raise Hm3Error(f"{self.label}: not a directory; give the path of a model directory")
        self.config = read_config(self.path, self.label)
        self._handles: dict[Path, BinaryIO] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        self.tensors = self._index(allow_pickle)

    # -- reading ---------------------------------------------------------------------------
    def _index(self, allow_pickle: bool) -> dict[str, TensorInfo]:
        files = _weight_files(self.path, SAFE_SINGLE, SAFE_INDEX, self.label)
        if files:
            return self._index_safetensors(files)
        pickled = _weight_files(self.path, PICKLE_SINGLE, PICKLE_INDEX, self.label)
        if not pickled and (self.path / "model.onnx").is_file():
            raise Hm3Error(
                f"{self.label}: an ONNX export (model.onnx), which torch cannot load; serve it "
                "with `hm3 serve DIR --onnx` or onnxruntime, or give the checkpoint it came from"
            )
        if not pickled:
            raise Hm3Error(
                f"{self.label}: no weights found (expected {SAFE_SINGLE} or {SAFE_INDEX}); "
                "save the model with `save_pretrained(dir)`"
            )
        if not allow_pickle:
            fix = spell("--allow-pickle", "allow_pickle=True")
            raise Hm3Error(
                f"{self.label}: weights are pickled ({pickled[0].name}) and pickles can run code; "
                f"convert them to safetensors, or pass {fix} to load them with "
                "torch.load(weights_only=True)"
            )
        return self._index_pickle(pickled)

    def _index_safetensors(self, files: list[Path]) -> dict[str, TensorInfo]:
        infos: dict[str, TensorInfo] = {}
        for file in files:
            header, data_start = read_safetensors_header(file)
            for name, entry in header.items():
                infos[name] = TensorInfo(
                    name, tuple(entry["shape"]), ST_DTYPES[entry["dtype"]], file
                )
                self._offsets[name] = (
                    data_start + entry["data_offsets"][0],
                    data_start + entry["data_offsets"][1],
                )
        return infos

    def _index_pickle(self, files: list[Path]) -> dict[str, TensorInfo]:
        state: dict[str, torch.Tensor] = {}
        for file in files:
            try:
                part = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # torch raises many types for a bad pickle
                raise Hm3Error(f"{file}: cannot load pickled weights safely ({exc})") from None
            state.update({k: v for k, v in part.items() if isinstance(v, torch.Tensor)})
        self._pickled = state
        return {k: TensorInfo(k, tuple(v.shape), v.dtype, files[0]) for k, v in state.items()}

    def get(self, name: str) -> torch.Tensor:
        """Load one tensor (on the CPU, in its stored dtype).

        Safetensors data are read with plain file reads rather than a memory map, so pages of
        tensors already merged do not stay in this process's resident memory.
        """
        info = self.tensors[name]
        if self._pickled is not None:
            return self._pickled[name]
        begin, end = self._offsets[name]
        buffer = bytearray(end - begin)
        self._read(info, buffer)
        if not buffer:
            return torch.empty(info.shape, dtype=info.dtype)
        return torch.frombuffer(buffer, dtype=info.dtype).reshape(info.shape)

    def read_into(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """Load one tensor into ``out`` (its shape; any dtype and device) and return ``out``.

        A tensor stored in ``out``'s dtype is read from the file straight into a contiguous
        CPU ``out``, with no intermediate buffer; anything else goes through :meth:`get`.
        """
        info = self.tensors[name]
        if tuple(out.shape) != info.shape:
            raise ValueError(f"{name}: stored shape {info.shape}, buffer {tuple(out.shape)}")
        direct = out.device.type == "cpu" and out.dtype == info.dtype and out.is_contiguous()
        if self._pickled is not None or not direct or out.numel() == 0:
            return out.copy_(self.get(name))
        self._read(info, memoryview(out.detach().reshape(-1).view(torch.uint8).numpy()))
        return out

    def _read(self, info: TensorInfo, buffer: bytearray | memoryview) -> None:
        begin, end = self._offsets[info.name]
        handle = self._handles.get(info.file)
        if handle is None:
            handle = self._handles[info.file] = open(info.file, "rb")  # noqa: SIM115
        handle.seek(begin)
        if handle.readinto(buffer) != end - begin:
            raise Hm3Error(
                f"{info.file}: ends inside tensor {info.name}; the file is truncated — download "
                "or save it again"
            )

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._pickled = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_config(path: Path, label: str) -> dict:
    file = path / "config.json"
    if not file.is_file():
        raise Hm3Error(
            f"{label}: no config.json; a Hugging Face model directory saved with "
            "`save_pretrained` is expected"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Hm3Error(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise Hm3Error(f"{file}: expected a JSON object")
    return config


def read_safetensors_header(file: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """Parse and check a safetensors header without reading tensor data.

    Returns:
        ``(entries, data_start)``: tensor name → ``{"dtype", "shape", "data_offsets"}``, and the
        file offset where tensor data begin.
    """
    bad = f"{file}: not a readable safetensors file"
    fix = "download or save it again"
    size = file.stat().st_size
    with open(file, "rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) < 8:
            raise Hm3Error(f"{bad} (only {size} bytes); the file is truncated — {fix}")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > min(size - 8, 100_000_000):
            raise Hm3Error(
                f"{bad} (header length {header_len} > file size); truncated or corrupt — {fix}"
            )
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Hm3Error(f"{bad} (header is not JSON: {exc}); corrupt — {fix}") from None
    if not isinstance(header, dict):
        raise Hm3Error(f"{bad} (header is not a JSON object); corrupt — {fix}")
    header.pop("__metadata__", None)
    data_start, data_end = 8 + header_len, 0
    for name, entry in header.items():
        try:
            dtype = ST_DTYPES[entry["dtype"]]
            begin, end = (int(x) for x in entry["data_offsets"])
            expected = numel(tuple(entry["shape"])) * torch.empty((), dtype=dtype).element_size()
        except (KeyError, TypeError, ValueError):
            raise Hm3Error(
                f"{bad} (bad header entry for {name}); corrupt or an unsupported dtype — {fix}"
            ) from None
        if end - begin != expected or begin < 0:
            raise Hm3Error(f"{bad} (tensor {name} has inconsistent offsets); corrupt — {fix}")
        data_end = max(data_end, end)
    if data_start + data_end > size:
        raise Hm3Error(
            f"{file}: truncated safetensors file ({size} bytes, the header promises "
            f"{data_start + data_end}); {fix}"
        )
    return header, data_start


def _weight_files(path: Path, single: str, index: str, label: str) -> list[Path]:
    if (path / index).is_file():
        try:
            weight_map = json.loads((path / index).read_text(encoding="utf-8"))["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise Hm3Error(f"{path / index}: not a valid shard index ({exc})") from None
        files = [path / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise Hm3Error(
                f"{label}: shards listed in {index} are missing: {', '.join(missing)}; "
                "download the complete model"
            )
        return files
    if (path / single).is_file():
        return [path / single]
    return []


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


# -- locating ------------------------------------------------------------------------------
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def locate(ref: str, what: str) -> Path:
    """Turn a model reference into a local directory.

    Args:
        ref: a local directory, or a Hugging Face Hub id (``org/name``) that is fetched (only
            weights, config and tokenizer files; never code) or taken from the local HF cache.
        what: which input this is (``base_model``, ``models[1]``), for error messages.

    Returns:
        The directory.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise Hm3Error(f"{what}: {ref} is a file; give the model's directory")
    if not _HUB_ID.match(ref) or ref.startswith((".", "/", "~")):
        raise Hm3Error(f"{what}: directory {ref} not found; check the path")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
        try:
            return Path(snapshot_download(ref, allow_patterns=patterns, local_files_only=True))
        except Exception:
            return Path(snapshot_download(ref, allow_patterns=patterns))
    except Exception as exc:  # hub errors come in many types; all mean "not available"
        raise Hm3Error(
            f"{what}: {ref} is not a local directory and could not be fetched from the Hugging "
            f"Face Hub ({type(exc).__name__}); give a local path, or download it first with "
            f"`hf download {ref} --local-dir DIR`"
        ) from None
