"""A tiny trained detector for tests of long texts: ``unsafe`` when a text holds the trigger word.

tests/test_windows.py's ``detector`` fixture and tests/test_serve.py use it: a random BERT with 64
positions (62 content tokens per window), trained for a few seconds until it flags the trigger
anywhere in a window. A long text whose only trigger is its last word is then flagged with
windows combined by ``max``, and missed when truncated or when its windows are averaged.
"""

from __future__ import annotations

import random
from pathlib import Path

from tiny import WORDS, tiny_config, write_tokenizer

TRIGGER = "secret"
FILLER = [w for w in WORDS if w != TRIGGER]


def trigger_text(rng: random.Random, n: int, trigger_at: int | None = None) -> str:
    """``n`` filler words, with the trigger inserted before word ``trigger_at`` if given."""
    words = rng.choices(FILLER, k=n)
    if trigger_at is not None:
        words.insert(trigger_at, TRIGGER)
    return " ".join(words)


def train_detector(path: Path, steps: int = 150) -> Path:
    """Train the detector into ``path`` (its one task is named ``path.name``); ``path``."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    import hm3

    write_tokenizer(path)
    (path / "tokenizer.json").unlink(missing_ok=True)  # tokenize from vocab.txt (see conftest)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.convert_tokens_to_ids(TRIGGER) != tok.unk_token_id
    torch.manual_seed(0)
    config = tiny_config(
        "bert", id2label={0: "safe", 1: "unsafe"}, label2id={"safe": 0, "unsafe": 1}
    )
    model = BertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(steps):
        ys = [rng.randrange(2) for _ in range(32)]
        lengths = [rng.randint(10, 60) for _ in ys]
        texts = [
            trigger_text(rng, n, rng.randrange(n + 1) if y else None)
            for y, n in zip(ys, lengths, strict=True)
        ]
        batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
        loss = model(**batch, labels=torch.tensor(ys)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(path)
    clf = hm3.load(path)
    rng = random.Random(1)
    probe = [
        trigger_text(rng, 40, 20),
        trigger_text(rng, 40),
        trigger_text(rng, 60, 60),
        trigger_text(rng, 61),
    ]
    labels = [p.tasks[path.name].label for p in clf.predict(probe)]
    assert labels == ["unsafe", "safe", "unsafe", "safe"], (
        "the toy detector did not learn its task; train it longer"
    )
    return path
