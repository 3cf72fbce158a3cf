"""The fine-tuning loop of the demo classifiers: settings, batching, AdamW, validation.

:func:`run` loads the base as a sequence classifier with a fresh head, subsamples the rows
(label-balanced, seeded), fine-tunes every weight with AdamW and a linear warmup/decay
schedule on batches of similar length (sorted within seeded windows of the shuffled data:
dynamic padding is where CPU speed comes from), scores macro-F1 on the validation rows and
saves the model and tokenizer. Everything random comes from ``settings.seed``; the caller's
global RNG and thread count are restored. Caching, fingerprints and the output directory are
:mod:`hm3.demo.train.classifier`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.progress import TextColumn
from sklearn.metrics import accuracy_score, f1_score

from hm3.errors import Hm3Error
from hm3.model.classifier import quiet_transformers
from hm3.progress import progress_bar

_BUCKET_BATCHES = 16  # batches per length-sorted window of the shuffled data


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


DEFAULT_SETTINGS = TrainSettings()


@dataclass(frozen=True)
class Split:
    texts: list[str]
    targets: list[int]


def run(
    base_dir: Path,
    labels: tuple[str, ...],
    train: Split,
    validation: Split,
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
    split: Split, k: int, limit: int | None, generator: torch.Generator, *, balanced: bool = False
) -> Split:
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
    return Split([split.texts[i] for i in keep], [split.targets[i] for i in keep])


def batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
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
            for batch in batches(lengths, settings.batch_size, generator):
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
