"""Tiny real transformer checkpoints for tests, built from one shared random base per family.

A base is a random bare encoder (``BertModel``, ``RobertaModel``, ...: 2 layers, hidden 32)
with a 100-token WordPiece tokenizer. A "fine-tuned" classifier is that base loaded as a
``*ForSequenceClassification`` with a fresh head and its body perturbed (and optionally
trained for a few steps on a toy task), saved with ``save_pretrained`` — the same files a real
fine-tune produces. Nothing here needs the network.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertTokenizerFast,
)

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "electra")

WORDS = [
    "good",
    "great",
    "happy",
    "love",
    "nice",
    "fine",
    "bad",
    "awful",
    "sad",
    "hate",
    "terrible",
    "ignore",
    "previous",
    "instructions",
    "system",
    "prompt",
    "reveal",
    "secret",
    "buy",
    "cheap",
    "offer",
    "free",
    "money",
    "click",
    "now",
    "hello",
    "world",
    "the",
    "a",
    "is",
    "of",
    "to",
    "and",
    "in",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tokenizer(path: Path) -> None:
    """A 100-token uncased WordPiece tokenizer saved in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + list(dict.fromkeys(WORDS))
    vocab = (vocab + [f"tok{i}" for i in range(100)])[:100]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(path)
    if tok("good")["input_ids"][1] != vocab.index("good"):  # transformers' API drifts: check it
        raise RuntimeError("the tiny tokenizer maps words to [UNK]; check write_tokenizer")


def tiny_config(model_type: str, **extra):
    common = dict(vocab_size=100, max_position_embeddings=64, pad_token_id=0)
    if model_type == "distilbert":
        sizes = dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    else:
        sizes = dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    if model_type == "electra":
        sizes["embedding_size"] = 32
    if model_type in ("roberta", "xlm-roberta"):
        common["max_position_embeddings"] = 66
    return AutoConfig.for_model(model_type, **common, **sizes, **extra)


def make_base(path: Path, model_type: str = "bert", *, seed: int = 0, bare: bool = True) -> Path:
    """A random base model (bare encoder, or a classifier with a random 2-label head)."""
    torch.manual_seed(seed)
    config = tiny_config(model_type)
    model = (
        AutoModel.from_config(config)
        if bare
        else AutoModelForSequenceClassification.from_config(config)
    )
    model.save_pretrained(path)
    write_tokenizer(path)
    return path


def make_classifier(
    base: Path,
    path: Path,
    labels: Sequence[str],
    *,
    seed: int,
    noise: float = 0.02,
    train_steps: int = 0,
) -> Path:
    """A classifier fine-tuned from ``base``: fresh head, perturbed body, optional toy training."""
    torch.manual_seed(seed)
    id2label = {i: name for i, name in enumerate(labels)}
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,  # a classifier base brings a head of another size
    )
    with torch.no_grad():
        for param in model.parameters():
            param.add_(noise * torch.randn_like(param))
    if train_steps:
        _train(model, base, len(labels), train_steps, seed)
    model.save_pretrained(path)
    for file in base.iterdir():
        if file.name in (
            "vocab.txt",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ):
            (path / file.name).write_bytes(file.read_bytes())
    return path


def _train(model, base: Path, num_labels: int, steps: int, seed: int) -> None:
    """A few steps on a toy task: the label is which word group the text draws from."""
    tok = BertTokenizerFast.from_pretrained(base)
    rng = random.Random(seed)
    groups = [WORDS[i * 8 : i * 8 + 8] for i in range(num_labels)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        ys = [rng.randrange(num_labels) for _ in range(16)]
        texts = [" ".join(rng.choices(groups[y], k=6)) for y in ys]
        batch = tok(texts, return_tensors="pt", padding=True)
        loss = model(**batch, labels=torch.tensor(ys)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


#: ``hm3`` in a fresh interpreter whose Ctrl-C (SIGINT) is always a KeyboardInterrupt. Python
#: leaves SIGINT ignored in a child started while its parent ignores it, which a process running
#: C's system() does for that call's duration: a test that interrupts hm3 must not depend on it.
HM3_COMMAND = [
    sys.executable,
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from hm3.cli.app import main; main()",
]


def toy_texts(n: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(n)]


def write_merge_yaml(
    path: Path, base: Path, models: Sequence[Path], method: str = "ties", **extra
) -> Path:
    doc = {
        "base_model": str(base),
        "merge_method": method,
        "models": [{"model": str(m)} for m in models],
    }
    doc.update(extra)
    path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is valid YAML
    return path
