"""Tokenizer files of a model directory: compare vocabularies, copy them to a merged model.

Merging is only meaningful between models that map text to the same token ids. This module
reads the vocabulary straight from the files (``tokenizer.json``, ``vocab.txt``, ``vocab.json``
or a sentencepiece model) without importing ``transformers``, so the merge path stays light.
It does not tokenize anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spm.model",
    "sentencepiece.bpe.model",
)


def has_tokenizer(path: Path) -> bool:
    """True if the directory holds a vocabulary file a tokenizer can be built from."""
    return vocab_fingerprint(path) is not None


def vocab_fingerprint(path: Path) -> str | None:
    """A hash of the token→id mapping stored in ``path``, or ``None`` if it has no tokenizer.

    Args:
        path: a model directory.

    Returns:
        A hex digest that is equal for two directories when their token→id mappings (added
        tokens included) are equal, whether they are stored in ``tokenizer.json``,
        ``vocab.txt`` or ``vocab.json``. A sentencepiece model is compared byte for byte.
    """
    vocab = _read_vocab(path)
    if vocab is None:
        return None
    if isinstance(vocab, bytes):
        return hashlib.sha256(vocab).hexdigest()
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode("utf-8")).hexdigest()


def _read_vocab(path: Path) -> dict[str, int] | bytes | None:
    tok = path / "tokenizer.json"
    if tok.is_file():
        try:
            data = json.loads(tok.read_text(encoding="utf-8"))
            vocab = data["model"]["vocab"]
            if isinstance(vocab, list):  # unigram: [[piece, score], ...] in id order
                vocab = {piece[0]: i for i, piece in enumerate(vocab)}
            mapping = {str(k): int(v) for k, v in vocab.items()}
            mapping.update({t["content"]: int(t["id"]) for t in data.get("added_tokens", [])})
            return mapping
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return tok.read_bytes()
    if (path / "vocab.txt").is_file():
        lines = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return {token: i for i, token in enumerate(lines)} | _added_tokens(path)
    if (path / "vocab.json").is_file():
        try:
            mapping = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
            return {str(k): int(v) for k, v in mapping.items()} | _added_tokens(path)
        except (ValueError, AttributeError, TypeError):
            return (path / "vocab.json").read_bytes()
    for name in ("spm.model", "sentencepiece.bpe.model"):
        if (path / name).is_file():
            return (path / name).read_bytes()
    return None


def _added_tokens(path: Path) -> dict[str, int]:
    file = path / "added_tokens.json"
    if not file.is_file():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(file.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError, TypeError):
        return {}


def copy_tokenizer(source: Path, dest: Path) -> list[str]:
    """Copy the tokenizer files of ``source`` into ``dest``; return the names copied."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
            copied.append(name)
    return copied
