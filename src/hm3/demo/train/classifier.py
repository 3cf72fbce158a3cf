"""Fine-tune one demo classifier from the base encoder: a short, seeded, cached plain-torch run.

:func:`train_classifier` reads JSONL rows ``{"text": str, "label": str}``, fine-tunes the base
(every weight trainable) with AdamW and a linear warmup/decay schedule, scores macro-F1 on the
validation file and saves a standard Hugging Face classifier directory (safetensors, tokenizer
files, ``id2label`` in the given label order) plus ``training.json`` at
``out_root/<task>-<fingerprint>``. The fingerprint hashes the bytes of both data files, the
labels, the settings (but not ``threads``) and the base model's files (config, weights, tokenizer
— the weights are hashed in full: 90 MB take ~0.1 s, and a size+mtime key would miss a
re-unpacked or edited base). The same inputs reuse the directory without training.

The loop itself (settings, batching, optimiser, validation) is :mod:`hm3.demo.train.loop`;
:class:`~hm3.demo.train.loop.TrainSettings` is defined there. This module does not acquire data or
models, and does not score test sets (``hm3 evaluate`` does).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hm3.demo.train.loop import DEFAULT_SETTINGS, Split, TrainSettings, run
from hm3.errors import Hm3Error
from hm3.io.checkpoint import PICKLE_SINGLE, SAFE_INDEX, SAFE_SINGLE
from hm3.io.tables import iter_records, table_format
from hm3.io.tokenizer import TOKENIZER_FILES, has_tokenizer

__all__ = ["REPORT", "TrainedClassifier", "train_classifier"]

TRAINER_VERSION = 1  # bump when a change to the training recipe must invalidate cached models
REPORT = "training.json"
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TrainedClassifier:
    """A fine-tuned classifier directory. ``train_seconds`` is the wall time of the run that
    built it (loading, training, validation, saving), also when ``reused``."""

    path: Path
    task: str
    labels: tuple[str, ...]
    validation_macro_f1: float
    train_seconds: float
    reused: bool


def train_classifier(
    base_dir: Path,
    task: str,
    labels: Sequence[str],
    train_file: Path,
    validation_file: Path,
    out_root: Path,
    settings: TrainSettings = DEFAULT_SETTINGS,
    *,
    progress: bool = True,
) -> TrainedClassifier:
    """Fine-tune ``base_dir`` on ``train_file`` for ``task``, or reuse an identical earlier run.

    Args:
        base_dir: a Hugging Face encoder directory (config.json, model.safetensors, tokenizer).
        task: the task name; the output directory is ``out_root/<task>-<fingerprint>``.
        labels: the label names, in head order (``id2label[i] = labels[i]``).
        train_file: JSONL rows ``{"text": str, "label": str}``; every label must occur.
        validation_file: JSONL rows of the same shape, scored with macro-F1 after training.
        out_root: where classifier directories are kept (created if missing).
        settings: hyperparameters; see :class:`TrainSettings`.
        progress: show a progress bar with the running loss.

    Returns:
        The :class:`TrainedClassifier` (``reused=True`` when it was already there).
    """
    base_dir, out_root = Path(base_dir), Path(out_root)
    train_file, validation_file = Path(train_file), Path(validation_file)
    labels = _check_labels(task, labels)
    weights = _weight_files(base_dir)
    train = _read_split(train_file, labels, "train")
    validation = _read_split(validation_file, labels, "validation")
    _check_coverage(train_file, task, labels, train)
    digest, key = _fingerprint(base_dir, weights, labels, train_file, validation_file, settings)
    final = out_root / f"{task}-{digest[:16]}"
    if _complete(final):
        return _result(final, task, labels, reused=True)
    start = time.perf_counter()
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=out_root))
    try:
        bar = (f"fine-tune {task}", progress)
        report = run(base_dir, labels, train, validation, settings, tmp, bar)
        paths = (base_dir, train_file, validation_file)
        report.update(_provenance(task, digest, key, settings, paths))
        report["train_seconds"] = round(time.perf_counter() - start, 3)
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result(final, task, labels, reused=False)


def _check_labels(task: str, labels: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(task, str) or not _TASK_NAME.fullmatch(task):
        raise Hm3Error(f"task {task!r}: expected letters, digits, '_', '-' or '.'; rename it")
    out = tuple(labels) if not isinstance(labels, str) else (labels,)
    if len(out) < 2 or len(set(out)) != len(out) or not all(isinstance(x, str) and x for x in out):
        raise Hm3Error(f"labels of {task!r} {list(out)}: expected two or more distinct names")
    return out


def _weight_files(base: Path) -> list[Path]:
    """The base's safetensors files; a base without config, weights or tokenizer is refused."""
    if not (base / "config.json").is_file():
        raise Hm3Error(f"base model {base}: no config.json; point to a Hugging Face model folder")
    if (base / SAFE_SINGLE).is_file():
        return _with_tokenizer(base, [base / SAFE_SINGLE])
    if (base / SAFE_INDEX).is_file():
        shards = json.loads((base / SAFE_INDEX).read_text(encoding="utf-8"))["weight_map"]
        return _with_tokenizer(base, [base / name for name in sorted(set(shards.values()))])
    pickled = " (pickled weights are refused)" if (base / PICKLE_SINGLE).exists() else ""
    raise Hm3Error(f"base model {base}: no {SAFE_SINGLE}{pickled}; fetch the base model again")


def _with_tokenizer(base: Path, files: list[Path]) -> list[Path]:
    if not has_tokenizer(base):
        raise Hm3Error(f"base model {base}: no tokenizer.json or vocab.txt; fetch the base again")
    return files


def _read_split(path: Path, labels: tuple[str, ...], role: str) -> Split:
    where = f"{role} file {path}"
    table_format(path, where, "build the demo data first or fix the path")
    index = {name: i for i, name in enumerate(labels)}
    texts, targets = [], []
    for i, record in iter_records(path, where):
        row = i + 1  # rows are counted from 1 in every message
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not isinstance(label, str):
            raise Hm3Error(
                f'{where}: row {row} is not {{"text": str, "label": str}}; fix the row or '
                "rebuild the data"
            )
        if label not in index:
            raise Hm3Error(
                f"{where}: row {row} has label {label!r}, which is not one of {list(labels)}; "
                "fix the data or add the label to the task's labels"
            )
        texts.append(text)
        targets.append(index[label])
    if not texts:
        raise Hm3Error(f'{where}: no rows; expected JSONL {{"text": ..., "label": ...}}')
    return Split(texts, targets)


def _check_coverage(path: Path, task: str, labels: tuple[str, ...], train: Split) -> None:
    seen = set(train.targets)
    missing = [name for i, name in enumerate(labels) if i not in seen]
    if missing:
        raise Hm3Error(
            f"{path}: label {missing[0]!r} of task {task!r} has no training rows; add "
            "examples of it or remove it from the labels"
        )


def _sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _fingerprint(
    base_dir: Path,
    weights: list[Path],
    labels: tuple[str, ...],
    train_file: Path,
    validation_file: Path,
    settings: TrainSettings,
) -> tuple[str, dict]:
    """The cache key's digest, and the key itself (hashes of every input, labels, settings)."""
    base_files = [base_dir / "config.json", *weights]
    base_files += [base_dir / name for name in TOKENIZER_FILES if (base_dir / name).is_file()]
    key = {
        "trainer_version": TRAINER_VERSION,
        "base_sha256": _sha256(base_files),
        "train_sha256": _sha256([train_file]),
        "validation_sha256": _sha256([validation_file]),
        "labels": list(labels),
        "settings": settings.cache_key(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(), key


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in (REPORT, SAFE_SINGLE, "config.json"))


def _result(path: Path, task: str, labels: tuple[str, ...], *, reused: bool) -> TrainedClassifier:
    report = json.loads((path / REPORT).read_text(encoding="utf-8"))
    return TrainedClassifier(
        path, task, labels, report["validation_macro_f1"], report["train_seconds"], reused
    )


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an incomplete ``final`` is replaced, a complete one kept."""
    if final.exists() and not _complete(final):
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        final.rename(trash / final.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        if not _complete(final):  # not a concurrent run that finished first
            raise


def _provenance(
    task: str, digest: str, key: dict, settings: TrainSettings, paths: tuple[Path, Path, Path]
) -> dict:
    import transformers

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    return {
        "task": task,
        "fingerprint": digest,
        **key,
        "settings": asdict(settings),
        **{
            name: str(p)
            for name, p in zip(("base", "train_file", "validation_file"), paths, strict=True)
        },
        "versions": versions,
    }
