"""The model behind the server: what a text costs, its scores, the model's facts.

:class:`Engine` wraps a loaded predictor — a torch :class:`~hm3.model.classifier.Classifier` or
the ONNX Runtime predictor of :mod:`hm3.export.runtime` — and runs it from one thread only (the
batcher's), so the model never runs twice at once. :meth:`Engine.cost` (called from the event
loop and the tokenizing threads) says how many rows a text takes and how long the longest is:
one row truncated to ``max_length`` tokens, or, with windows (:mod:`hm3.model.windows`), one row
per overlapping window of a long text. It tokenizes with copies of the model's tokenizer, one
per thread: a Hugging Face fast tokenizer keeps its truncation settings between calls, so two
threads sharing one would truncate each other's texts (or fail).

A job is scored in one :class:`Mode`: probabilities (windows or truncation, as the server and
the request say) or raw logits (always the first ``max_length`` tokens: windows combine
probabilities, not logits). Scores that are not finite (NaN or infinite: a float16 overflow)
are refused (:class:`NonFiniteScores`), never answered. What it does not: batch requests,
validate them or format answers.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hm3.errors import Hm3Error
from hm3.io.checkpoint import read_config
from hm3.io.paths import dir_name
from hm3.model.labels import Task
from hm3.model.predictor import BasePredictor, Scoring, segment_softmax
from hm3.model.windows import Windows, content_step, default_labels, spans
from hm3.options import RunOptions

log = logging.getLogger("hm3")

WARM_UP_TEXTS = ("warm up", "a longer text that warms up the model before the first request")


class NonFiniteScores(Exception):
    """The model gave NaN or infinite scores (in float16 or bfloat16: an overflow)."""


@dataclass(frozen=True)
class Mode:
    """How a job's texts are scored; only jobs of one mode share a forward batch.

    ``raw``: logits of the first ``max_length`` tokens. ``windows``: long texts in windows
    (when the server has them on), else truncated.
    """

    raw: bool = False
    windows: bool = True


@dataclass(frozen=True)
class Cost:
    """One text: its rows (windows), the longest row's tokens, and its full token count."""

    rows: int
    longest: int
    tokens: int


@dataclass(frozen=True)
class Scores:
    """Answers of some texts: per task probabilities ``[n, K_task]``; logits in raw mode."""

    probs: dict[str, np.ndarray]
    logits: np.ndarray | None

    def rows(self, lo: int, hi: int) -> Scores:
        probs = {name: p[lo:hi] for name, p in self.probs.items()}
        return Scores(probs, None if self.logits is None else self.logits[lo:hi])


class Engine:
    """A predictor with what the server needs of it. Build it with :func:`load_engine`."""

    def __init__(
        self,
        predictor: BasePredictor,
        path: Path,
        *,
        kind: str,
        options: RunOptions,
        budget: int,
        windows: Windows | None,
    ) -> None:
        self.predictor = predictor
        self.path = path
        self.kind = kind
        self.options = options
        self.budget = budget
        self.tasks: list[Task] = list(predictor.tasks)
        self.tokenizer = predictor.tokenizer
        self.max_length = int(predictor.max_length)
        # GET /info's model_dtype: an export's own precision (int8), else the torch weights'
        self.dtype = getattr(predictor, "precision", None) or str(
            getattr(predictor.model, "dtype", options.dtype or "float32")
        ).removeprefix("torch.")
        self.windows = windows
        if windows is not None:  # a --default-label the model lacks: refused before serving
            default_labels(self.tasks, windows.default_labels)
        # cost's tokenizers: copies of this spare, which never tokenizes (see _cost_tokenizer)
        self._spare = copy.deepcopy(self.tokenizer)
        self._spare_lock = threading.Lock()
        self._local = threading.local()
        # the recipe and alignment record, read once for GET /v1/tasks
        self._hm3 = read_config(path, "model").get("hm3") or {}
        self._special = self.tokenizer.num_special_tokens_to_add(pair=False)
        if windows is not None:
            self._content, self._step = content_step(self.max_length, self._special, windows.stride)

    def cost(self, texts: Sequence[str], mode: Mode) -> list[Cost]:
        """Rows and tokens of each text as ``mode`` scores it (special tokens included)."""
        enc = self._cost_tokenizer()(
            list(texts), return_attention_mask=False, return_token_type_ids=False, verbose=False
        )
        out = []
        for ids in enc["input_ids"]:
            n = len(ids)
            if n <= self.max_length:
                out.append(Cost(1, n, n))
            elif self.windowed(mode):
                rows = len(spans(n - self._special, self._content, self._step))
                out.append(Cost(rows, self.max_length, n))
            else:
                out.append(Cost(1, self.max_length, n))
        return out

    def _cost_tokenizer(self) -> Any:
        """This thread's own copy of the tokenizer (the model thread's is never shared)."""
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            with self._spare_lock:
                tokenizer = self._local.tokenizer = copy.deepcopy(self._spare)
        return tokenizer

    def windowed(self, mode: Mode) -> bool:
        return self.windows is not None and mode.windows and not mode.raw

    def begin(self, texts: Sequence[str], mode: Mode, longest: int) -> Scoring:
        """``texts`` encoded for ``mode``, to be scored one forward pass at a time
        (:meth:`~hm3.model.predictor.Scoring.step`), each pass within the token budget."""
        per_pass = max(1, min(self.options.batch_size, self.budget // max(1, longest)))
        windows = self.windows if self.windowed(mode) else None
        return Scoring(self.predictor, texts, per_pass, windows)

    def finish(self, work: Scoring, mode: Mode) -> Scores:
        """The scores of a :meth:`begin` whose passes have all run, in input order.

        Raises:
            NonFiniteScores: a score is NaN or infinite.
        """
        if mode.raw:
            logits = work.logits()
            scores = Scores(segment_softmax(logits, self.tasks), logits)
        else:
            probs = work.probs()
            scores = Scores({t.name: np.asarray(probs[t.name]) for t in self.tasks}, None)
        arrays = [*scores.probs.values(), *([] if scores.logits is None else [scores.logits])]
        if not all(np.isfinite(a).all() for a in arrays):
            raise NonFiniteScores(self._non_finite())
        return scores

    def infer(self, texts: Sequence[str], mode: Mode, longest: int) -> Scores:
        """Scores of ``texts`` in input order, every pass at once (:meth:`begin`, :meth:`finish`).

        Raises:
            NonFiniteScores: a score is NaN or infinite.
        """
        return self.finish(self.begin(texts, mode, longest).run(), mode)

    def _non_finite(self) -> str:
        dtype = self.options.dtype or "float32"
        if self.kind == "torch" and dtype != "float32":
            why = f"an overflow in {dtype}; serve it with --dtype float32"
        else:
            why = "an overflow (a float16 export?) or broken weights; check it with hm3 predict"
        return f"the model gave non-finite scores (NaN or infinite): {why}"

    def warm_up(self) -> None:
        """Run the model once so the first request does not pay for lazy initialisation.

        Raises:
            NonFiniteScores: the model overflows even on the warm-up texts.
        """
        texts = list(WARM_UP_TEXTS)
        self.infer(texts, Mode(), max(c.longest for c in self.cost(texts, Mode())))

    def describe(self) -> dict[str, Any]:
        """Tasks, labels, how long texts are scored, and the recipe (``config.json``'s hm3)."""
        block = self._hm3
        if self.windows is None:
            long_texts: dict[str, Any] = {"mode": "truncate"}
        else:
            long_texts = {
                "mode": "windows",
                "stride": self._step,
                "combine": self.windows.combine,
                "default_labels": default_labels(self.tasks, self.windows.default_labels),
            }
        return {
            "model": dir_name(self.path),
            "runtime": self.kind,
            "max_length": self.max_length,
            "long_texts": long_texts,
            "tasks": [{"name": t.name, "labels": list(t.labels)} for t in self.tasks],
            "recipe": block.get("merge"),
            "align": block.get("align"),
        }


def load_engine(
    path: Path, *, onnx: bool, options: RunOptions, budget: int, windows: Windows | None
) -> Engine:
    """Load the model (torch, or ONNX Runtime with ``onnx``) on the options' device.

    Raises:
        Hm3Error: what the loader refuses, or ``--onnx`` where hm3 has no ONNX runtime.
    """
    if onnx:
        try:
            from hm3.export.runtime import load_onnx
        except ImportError as exc:
            raise Hm3Error(
                f"--onnx: the ONNX runtime cannot be imported ({exc}); install hm3[export] or "
                "serve the torch model without --onnx"
            ) from None
        predictor = load_onnx(path, options=options)
        kind = "onnxruntime"
        _warn_if_exported_shorter(path, predictor.max_length, options.max_length, windows)
    else:
        from hm3.model.classifier import load

        predictor = load(path, options=options)
        kind = "torch"
    return Engine(predictor, Path(path), kind=kind, options=options, budget=budget, windows=windows)


def _warn_if_exported_shorter(path: Path, exported: int, asked: int, windows: Windows | None):
    """One warning where the export reads fewer tokens than ``--max-length`` and its model's
    positions allow: it was exported at a shorter length, which caps what it serves."""
    from hm3.model.classifier import usable_length

    possible = usable_length(read_config(path, str(path)), asked)
    if exported >= possible:
        return
    how = "read in windows of" if windows is not None else "cut to their first"
    log.warning(
        "%s was exported at %d tokens, so longer texts are %s %d tokens (--max-length %d asked);"
        " export it again with --max-length %d to read more of each text at once",
        path, exported, how, exported, asked, possible,
    )  # fmt: skip
