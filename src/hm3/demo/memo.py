"""Predictors that share work between the demo's many models, so a 2-core machine keeps up.

The demo evaluates 18 merged variants and 4 originals. Two facts make most of that work
redundant: an original gives the same logits for a text in every case study, and a merge and
its aligned twin differ only in their label projection — the body, where all the compute is,
is the same. So:

- :class:`MemoLogits` wraps a loaded classifier and computes its logits once per distinct
  text, whichever evaluation or alignment asks; with a store file, once across runs too
  (the originals do not change once the zoo is cached).
- :class:`SharedBody` keeps a merged model's projection inputs (what :func:`hm3.model.features.
  features` captures) once per distinct text; :meth:`SharedBody.head` is a predictor for any
  projection ``(weight, bias)`` on that body: the merged head, or an aligned one.
- :func:`fit_alignment` is ``hm3 align``'s fit (:class:`hm3.alignment.fit.RidgeStats`) on those
  cached features and originals' logits.

All of them satisfy :class:`hm3.model.predictor.Predictor`, so :func:`hm3.evaluation.run.evaluate`
scores them like directories. ``tests/test_demo_shared.py`` checks that the numbers equal the
public path (``hm3 align`` then ``hm3 evaluate`` on directories). Nothing here writes files
but :meth:`MemoLogits.save`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hm3.alignment.fit import RidgeStats
from hm3.io.checkpoint import read_config
from hm3.model.classifier import Classifier
from hm3.model.features import Projection, features, find_projection
from hm3.model.labels import Task

log = logging.getLogger("hm3")


class MemoLogits:
    """A classifier whose logits are computed once per distinct text.

    With a ``store`` file the memo outlives the run: rows found there are reused and
    :meth:`save` writes the memo back (atomically). A store belongs to one model, one
    truncation length and one kind of device: it records the sha256 of the model directory's
    files, ``max_length`` and ``cpu``/``cuda``, and is ignored (with a warning) when any of
    them differs or it cannot be read.
    It holds a 16-byte digest of each text, never the text, and no pickle.
    """

    def __init__(self, clf: Classifier, store: Path | None = None) -> None:
        self.clf = clf
        self.tasks = clf.tasks
        self.path = clf.path
        self.store = store
        self._stamp = _stamp(clf) if store is not None else ""
        self._rows: dict[bytes, np.ndarray] = _read_store(store, self._stamp) if store else {}
        self._saved = len(self._rows)

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        keys = [_digest(t) for t in texts]
        new = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._rows}
        if new:
            values = self.clf.logits(list(new.values()), batch_size)
            self._rows.update(zip(new, values, strict=True))
        return _stack([self._rows[k] for k in keys], self.tasks[-1].end)

    def save(self) -> None:
        """Write the memo to its store, if it has one and rows were added."""
        if self.store is None or len(self._rows) == self._saved:
            return
        keys = np.array(list(self._rows), dtype="S16")
        values = _stack(list(self._rows.values()), self.tasks[-1].end)
        tmp = self.store.with_name(f".{self.store.name}.tmp")
        with tmp.open("wb") as f:
            np.savez(f, keys=keys, logits=values, stamp=np.array(self._stamp))
        os.replace(tmp, self.store)
        self._saved = len(self._rows)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _stamp(clf: Classifier) -> str:
    """What a store's logits depend on: the model directory's files (weights, config,
    tokenizer), the truncation length and the kind of device."""
    digest = hashlib.sha256(f"max_length={clf.max_length};device={clf.device.type};".encode())
    for name in sorted(p.name for p in clf.path.iterdir() if p.is_file()):
        digest.update(f"{name};".encode())
        with (clf.path / name).open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _read_store(store: Path, stamp: str) -> dict[bytes, np.ndarray]:
    if not store.is_file():
        return {}
    try:
        with np.load(store, allow_pickle=False) as data:
            if str(data["stamp"]) != stamp:
                log.warning("%s: made for other weights or max_length; recomputing", store)
                return {}
            keys, values = data["keys"], data["logits"]
            if keys.dtype != np.dtype("S16") or values.ndim != 2 or len(keys) != len(values):
                raise ValueError("unexpected arrays")
            return {bytes(k): v for k, v in zip(keys, values.astype(np.float32), strict=True)}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("%s: unreadable logits store (%s); recomputing", store, exc)
        return {}


class SharedBody:
    """A merged model's projection inputs, once per distinct text, and heads on top of them."""

    def __init__(self, clf: Classifier) -> None:
        self.clf = clf
        self.projection: Projection = find_projection(clf, read_config(clf.path, ""), str(clf.path))
        self.module = clf.model.get_submodule(self.projection.module)
        self._rows: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return int(self.module.weight.shape[1])

    def features(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``[len(texts), dim]`` projection inputs (float32), in text order."""
        new = sorted(dict.fromkeys(t for t in texts if t not in self._rows), key=len)
        with torch.inference_mode():
            for lo in range(0, len(new), batch_size):
                batch = new[lo : lo + batch_size]
                x, _ = features(self.clf, self.module, batch, self.projection)
                self._rows.update(zip(batch, x.numpy(), strict=True))
        return _stack([self._rows[t] for t in texts], self.dim)

    def head(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> Head:
        """A predictor with this body and the given projection (default: the model's own)."""
        own = self.module.weight.detach()
        w = (own if weight is None else weight).float().cpu().numpy()
        if bias is None and self.module.bias is not None:
            bias = self.module.bias.detach()
        b = np.zeros(w.shape[0], np.float32) if bias is None else bias.float().cpu().numpy()
        return Head(self, w, b)


@dataclass
class Head:
    """Logits = the shared body's features · weightᵀ + bias (one label projection)."""

    body: SharedBody
    weight: np.ndarray  # [K, d]
    bias: np.ndarray  # [K]

    @property
    def tasks(self) -> list[Task]:
        return self.body.clf.tasks

    @property
    def path(self) -> Path:
        return self.body.clf.path

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self.body.features(texts, batch_size) @ self.weight.T + self.bias


def fit_alignment(
    body: SharedBody,
    originals: Mapping[str, MemoLogits],
    texts: Sequence[str],
    ridge: float | str,
    batch_size: int = 32,
) -> Head:
    """``hm3 align`` on cached work: each task's rows re-fitted to its original's logits.

    Args:
        body: the merged model.
        originals: task name → its original (a one-task classifier).
        texts: the unlabeled fitting texts.
        ridge: relative ridge strength, or ``"auto"`` (see :mod:`hm3.alignment.fit`).
        batch_size: texts per forward pass, for texts not yet cached.

    Returns:
        The aligned head on ``body``.
    """
    tasks = body.clf.tasks
    x = torch.from_numpy(body.features(texts, batch_size))
    y = torch.empty(len(texts), tasks[-1].end, dtype=torch.float32)
    for task in tasks:
        theirs = originals[task.name].logits(texts, batch_size)
        y[:, task.start : task.end] = torch.from_numpy(theirs)
    stats = RidgeStats(body.dim, tasks[-1].end)
    stats.add(x, y)
    groups = [(t.start, t.end) for t in tasks]
    solution = stats.solve_for(ridge, groups, intercept=body.projection.bias is not None)
    return body.head(solution.weight, solution.bias if body.projection.bias else None)


def _stack(rows: list[np.ndarray], width: int) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, width), np.float32)
