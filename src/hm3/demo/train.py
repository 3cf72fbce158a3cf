"""Fine-tune one demo classifier from the base encoder: a short, seeded, cached plain-torch run.

:func:`train_classifier` reads JSONL rows ``{"text": str, "label": str}``, fine-tunes the base
(every weight trainable) with AdamW and a linear warmup/decay schedule, scores macro-F1 on the
validation file and saves a standard Hugging Face classifier directory (safetensors, tokenizer
files, ``id2label`` in the given label order) plus ``training.json`` at
``out_root/<task>-<fingerprint>``. The fingerprint hashes the bytes of both data files, the
labels, the settings (but not ``threads``) and the base model's files (config, weights, tokenizer
— the weights are hashed in full: 90 MB take ~0.1 s, and a size+mtime key would miss a
re-unpacked or edited base). The same inputs reuse the directory without training.

Speed on CPU comes from short inputs (64 tokens), dynamic padding and batches of similar
length (sorted within seeded windows of the shuffled data), not from freezing layers.
Everything random (head init, dropout, subsampling, batch order) comes from ``settings.seed``;
the caller's global RNG and thread count are restored afterwards. This module does not acquire
data or models, and does not score test sets (``hm3 evaluate`` does).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.progress import TextColumn
from sklearn.metrics import accuracy_score, f1_score

from hm3.checkpoint import PICKLE_SINGLE, SAFE_INDEX, SAFE_SINGLE
from hm3.classifier import quiet_transformers
from hm3.errors import Hm3Error
from hm3.progress import progress_bar
from hm3.tokenizer_files import TOKENIZER_FILES, has_tokenizer

TRAINER_VERSION = 1  # bump when a change to the training recipe must invalidate cached models
REPORT = "training.json"
_BUCKET_BATCHES = 16  # batches per length-sorted window of the shuffled data
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TrainSettings:
    """How to fine-tune. Defaults fit four demo classifiers in 10 minutes on 2 CPU cores.

    ``max_train_examples`` caps the training rows with a seeded, label-balanced sample (each
    label gets an equal share, a label with fewer rows gives its unused share to the others);
    ``max_validation_examples`` caps validation rows with a seeded sample. ``threads`` sets
    torch's intra-op threads for the run (``None``: leave as is); it is not part of the cache key.
    """

    epochs: int = 1
    batch_size: int = 32
    max_length: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0
    max_train_examples: int | None = 4000
    max_validation_examples: int | None = 1000
    balance_labels: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        ok = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "max_length": self.max_length >= 8,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            **{
                name: getattr(self, name) is None or getattr(self, name) >= 1
                for name in ("max_train_examples", "max_validation_examples", "threads")
            },
        }
        for name in (name for name, good in ok.items() if not good):
            raise Hm3Error(
                f"TrainSettings.{name}={getattr(self, name)!r}: out of range (epochs, "
                "batch_size, threads, max_*_examples >= 1; max_length >= 8; "
                "learning_rate > 0; weight_decay >= 0; 0 <= warmup_ratio < 1)"
            )

    def cache_key(self) -> dict:
        """The settings that change the trained weights (all but ``threads``)."""
        key = asdict(self)
        del key["threads"]
        return key


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


@dataclass(frozen=True)
class _Split:
    texts: list[str]
    targets: list[int]


def train_classifier(
    base_dir: Path,
    task: str,
    labels: Sequence[str],
    train_file: Path,
    validation_file: Path,
    out_root: Path,
    settings: TrainSettings = TrainSettings(),
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
        report = _run(base_dir, labels, train, validation, settings, tmp, bar)
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


def _read_split(path: Path, labels: tuple[str, ...], role: str) -> _Split:
    if not path.is_file():
        raise Hm3Error(f"{role} file {path}: not found; build the demo data first or fix the path")
    index = {name: i for i, name in enumerate(labels)}
    texts, targets = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise Hm3Error(f"{role} file {path}: not UTF-8 text; rebuild the data") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label = row["text"], row["label"]
        except (json.JSONDecodeError, TypeError, KeyError):
            text = label = None
        if not isinstance(text, str) or not isinstance(label, str):
            raise Hm3Error(
                f'{path}:{n}: expected a JSON object {{"text": str, "label": str}}; '
                "fix the line or rebuild the data"
            )
        if label not in index:
            raise Hm3Error(
                f"{path}:{n}: label {label!r} is not one of {list(labels)}; "
                "fix the data or add the label to the task's labels"
            )
        texts.append(text)
        targets.append(index[label])
    if not texts:
        raise Hm3Error(f'{role} file {path}: no rows; expected JSONL {{"text": ..., "label": ...}}')
    return _Split(texts, targets)


def _check_coverage(path: Path, task: str, labels: tuple[str, ...], train: _Split) -> None:
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


def _run(
    base_dir: Path,
    labels: tuple[str, ...],
    train: _Split,
    validation: _Split,
    settings: TrainSettings,
    out: Path,
    bar: tuple[str, bool],
) -> dict:
    """Load, subsample, train, validate and save into ``out``; returns the report's numbers."""
    with _threads(settings.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        model, tokenizer = _load(base_dir, labels, settings.max_length)
        train = _sample(
            train,
            len(labels),
            settings.max_train_examples,
            generator,
            balanced=settings.balance_labels,
        )
        validation = _sample(validation, len(labels), settings.max_validation_examples, generator)
        ids = tokenizer(train.texts, truncation=True, max_length=settings.max_length)["input_ids"]
        started = time.perf_counter()
        pad_id = tokenizer.pad_token_id or 0
        steps = _fit(model, ids, train.targets, settings, generator, pad_id, bar)
        seconds = time.perf_counter() - started
        val_ids = tokenizer(validation.texts, truncation=True, max_length=settings.max_length)[
            "input_ids"
        ]
        predicted = _predict(model, val_ids, settings.batch_size * 2, pad_id)
        with quiet_transformers():
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
    return {
        "validation_macro_f1": float(f1_score(validation.targets, predicted, average="macro")),
        "validation_accuracy": float(accuracy_score(validation.targets, predicted)),
        "train_rows": len(train.texts),
        "train_rows_per_label": {name: train.targets.count(i) for i, name in enumerate(labels)},
        "validation_rows": len(validation.texts),
        "steps": steps,
        "loop_seconds": round(seconds, 3),
        "seconds_per_batch": round(seconds / max(steps, 1), 4),
        "threads": torch.get_num_threads() if settings.threads is None else settings.threads,
    }


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load(base_dir: Path, labels: tuple[str, ...], max_length: int):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(base_dir, trust_remote_code=False)
    positions = int(getattr(config, "max_position_embeddings", max_length))
    if max_length > positions:
        raise Hm3Error(
            f"TrainSettings.max_length={max_length}: the base {base_dir} takes at most "
            f"{positions} tokens; lower it"
        )
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            use_safetensors=True,
            trust_remote_code=False,
        )
        tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False)
    return model, tokenizer


def _sample(
    split: _Split, k: int, limit: int | None, generator: torch.Generator, *, balanced: bool = False
) -> _Split:
    """A seeded sample of at most ``limit`` rows (label-balanced as far as the data allows)."""
    if limit is None or limit >= len(split.texts):
        return split
    if balanced:
        by_label = [[i for i, y in enumerate(split.targets) if y == c] for c in range(k)]
    else:
        by_label = [list(range(len(split.texts)))]
    quotas, left = [0] * len(by_label), limit
    for pos, c in enumerate(sorted(range(len(by_label)), key=lambda c: len(by_label[c]))):
        quotas[c] = min(len(by_label[c]), left // (len(by_label) - pos))
        left -= quotas[c]
    keep = sorted(
        rows[j]
        for rows, q in zip(by_label, quotas, strict=True)
        for j in torch.randperm(len(rows), generator=generator)[:q].tolist()
    )
    return _Split([split.texts[i] for i in keep], [split.targets[i] for i in keep])


def _batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches: shuffle, sort windows of ``_BUCKET_BATCHES`` batches by length,
    cut, shuffle the batches. Similar lengths in a batch mean less padding."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * _BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _collate(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def _optimizer(model, settings: TrainSettings, total: int):
    """AdamW (no decay on biases and LayerNorm), linear warmup to the peak, linear decay to 0."""
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=settings.learning_rate,
    )
    warmup = math.ceil(total * settings.warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _fit(
    model,
    ids: list[list[int]],
    targets: list[int],
    settings: TrainSettings,
    generator: torch.Generator,
    pad_id: int,
    bar_spec: tuple[str, bool],
) -> int:
    """Train in place; returns the number of optimizer steps."""
    lengths = [len(r) for r in ids]
    total = settings.epochs * math.ceil(len(ids) / settings.batch_size)
    optimizer, schedule = _optimizer(model, settings, total)
    model.train()
    smooth = float("nan")  # running loss for the bar
    with progress_bar(bar_spec[1], TextColumn("loss {task.fields[loss]:.3f}")) as bar:
        job = bar.add_task(bar_spec[0], total=total, loss=smooth)
        for _ in range(settings.epochs):
            for batch in _batches(lengths, settings.batch_size, generator):
                labels = torch.tensor([targets[i] for i in batch], dtype=torch.long)
                loss = model(**_collate([ids[i] for i in batch], pad_id), labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                smooth = loss.item() if math.isnan(smooth) else 0.9 * smooth + 0.1 * loss.item()
                bar.update(job, advance=1, loss=smooth)
    return total


@torch.inference_mode()
def _predict(model, ids: list[list[int]], batch_size: int, pad_id: int) -> list[int]:
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    predicted = [0] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logits = model(**_collate([ids[i] for i in chunk], pad_id)).logits
        for i, p in zip(chunk, logits.argmax(-1).tolist(), strict=True):
            predicted[i] = p
    return predicted
