"""Which tensors of a sequence classifier are its label projection, and which are shared body.

HM3 (Algorithm 1) pads only the *label projection*: the last linear layer that maps a hidden
vector to one logit per label. Everything else — the encoder and any hidden head layers such
as RoBERTa's ``classifier.dense`` or DeBERTa's ``pooler.dense`` — is body, merged like any
other weight (the paper merges the whole model this way).

This module knows the supported families by their ``config.json`` ``model_type`` and lets a
merge config declare the projection of any other family, whose body prefix (GPT-2's
``transformer.``, Llama's ``model.``) it detects from tensor names; :func:`base_counterpart`
maps a fine-tuned tensor's name to the base checkpoint's. It reads no weights.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, replace

from hm3.errors import Hm3Error


@dataclass(frozen=True)
class Architecture:
    """Tensor layout of one family of ``*ForSequenceClassification`` models.

    Attributes:
        model_type: the ``model_type`` of ``config.json`` (``"custom"`` for declared heads).
        body_prefix: prefix of the encoder's tensors in the classifier (``"bert."``); a bare
            encoder checkpoint (``BertModel``) stores the same tensors without it.
        projection_weight: name of the label projection's weight, shape ``[num_labels, hidden]``.
        projection_bias: name of its bias (``None`` if the head has no bias).
        hidden_head: tensors outside ``body_prefix`` that are merged like body weights.
        hidden_size_keys: ``config.json`` keys that hold the hidden size, first one present wins.
    """

    model_type: str
    body_prefix: str
    projection_weight: str
    projection_bias: str | None
    hidden_head: tuple[str, ...] = ()
    hidden_size_keys: tuple[str, ...] = ("hidden_size",)

    @property
    def projection(self) -> tuple[str, ...]:
        """Names of the label projection tensors (weight first)."""
        if self.projection_bias is None:
            return (self.projection_weight,)
        return (self.projection_weight, self.projection_bias)

    def is_projection(self, name: str) -> bool:
        return name in self.projection

    def check_head(
        self, shapes: Mapping[str, tuple[int, ...]], num_labels: int, source: str, fix: str
    ) -> None:
        """Raise unless the checkpoint holds this family's label projection for its labels.

        Args:
            shapes: tensor name → shape of every stored tensor (headers only).
            num_labels: how many labels ``config.json`` lists.
            source: the checkpoint, for messages.
            fix: what the caller's user should do about a missing head.
        """
        missing = [name for name in self.projection if name not in shapes]
        if missing:
            raise Hm3Error(
                f"{source}: has no classification head (tensor {missing[0]} missing); is it a "
                f"bare encoder? {fix}"
            )
        rows = shapes[self.projection_weight][0]
        if rows != num_labels:
            raise Hm3Error(
                f"{source}: config.json lists {num_labels} labels but {self.projection_weight} "
                f"has {rows} rows; fix id2label in config.json"
            )

    def hidden_size(self, config: dict) -> int | None:
        for key in self.hidden_size_keys:
            if isinstance(config.get(key), int):
                return int(config[key])
        return None


def _dense(prefix: str) -> tuple[str, str]:
    return (f"{prefix}.weight", f"{prefix}.bias")


_ROBERTA_LIKE = dict(
    projection_weight="classifier.out_proj.weight",
    projection_bias="classifier.out_proj.bias",
    hidden_head=_dense("classifier.dense"),
)

SUPPORTED: dict[str, Architecture] = {
    arch.model_type: arch
    for arch in (
        Architecture("bert", "bert.", "classifier.weight", "classifier.bias"),
        Architecture(
            "distilbert",
            "distilbert.",
            "classifier.weight",
            "classifier.bias",
            hidden_head=_dense("pre_classifier"),
            hidden_size_keys=("dim", "hidden_size"),
        ),
        Architecture("roberta", "roberta.", **_ROBERTA_LIKE),
        Architecture("xlm-roberta", "roberta.", **_ROBERTA_LIKE),
        Architecture("electra", "electra.", **_ROBERTA_LIKE),
        Architecture(
            "deberta",
            "deberta.",
            "classifier.weight",
            "classifier.bias",
            hidden_head=_dense("pooler.dense"),
        ),
        Architecture(
            "deberta-v2",
            "deberta.",
            "classifier.weight",
            "classifier.bias",
            hidden_head=_dense("pooler.dense"),
        ),
    )
}

HEADS_HINT = (
    "to merge another family, declare its label projection in the merge config, e.g. "
    "`heads: {projection: [score.weight, score.bias]}`"
)


def resolve_architecture(
    config: dict, source: str, projection: tuple[str, ...] | None = None
) -> Architecture:
    """Return the layout for a model's ``config.json``.

    Args:
        config: the parsed ``config.json`` of a fine-tuned classifier.
        source: where the config came from, for error messages.
        projection: tensor names declared in the merge config (``heads.projection``): weight,
            then optionally bias. When given, it overrides the built-in table.

    Returns:
        The :class:`Architecture` to use.

    Raises:
        Hm3Error: unknown ``model_type`` and no declared projection.
    """
    model_type = str(config.get("model_type", ""))
    if projection:
        known = SUPPORTED.get(model_type)
        return Architecture(
            model_type=model_type or "custom",
            body_prefix=known.body_prefix if known else "",
            projection_weight=projection[0],
            projection_bias=projection[1] if len(projection) > 1 else None,
            hidden_size_keys=known.hidden_size_keys if known else ("hidden_size", "dim", "d_model"),
        )
    if model_type in SUPPORTED:
        return SUPPORTED[model_type]
    supported = ", ".join(sorted(SUPPORTED))
    raise Hm3Error(
        f"{source}: model_type {model_type!r} is not a supported architecture "
        f"(supported: {supported}); {HEADS_HINT}"
    )


def with_body_prefix(
    arch: Architecture, names: Collection[str], base_names: Collection[str]
) -> Architecture:
    """``arch``, with the body prefix detected from tensor names when the table gives none.

    Args:
        arch: the resolved layout (a declared head of an unknown family has ``body_prefix=""``).
        names: the fine-tuned classifier's tensor names.
        base_names: the base checkpoint's tensor names.

    Returns:
        ``arch`` unchanged when it has a prefix, else with the detected one (maybe still ``""``).
    """
    if arch.body_prefix:
        return arch
    return replace(arch, body_prefix=detect_body_prefix(names, base_names, arch.projection))


def detect_body_prefix(
    names: Collection[str], base_names: Collection[str], skip: Collection[str] = ()
) -> str:
    """The leading path component (``"transformer."``) whose removal matches the most names.

    A classifier stores its encoder under one attribute (``transformer.h.0.attn...``) that a
    bare encoder checkpoint lacks (``h.0.attn...``). Each first component of ``names`` (less
    ``skip``) is tried; the one that makes the most names equal a base name wins over no prefix
    only if it matches more.

    Returns:
        The prefix with its trailing dot, or ``""`` when none matches more than the names as is.
    """
    body = [n for n in names if n not in skip]
    base = set(base_names)

    def hits(prefix: str) -> int:
        return sum(n in base or (n.startswith(prefix) and n[len(prefix) :] in base) for n in body)

    best, best_hits = "", hits("\0")  # no name starts with NUL: names as they are
    for prefix in sorted({n.split(".", 1)[0] + "." for n in body if "." in n}):
        if hits(prefix) > best_hits:
            best, best_hits = prefix, hits(prefix)
    return best


def base_counterpart(arch: Architecture, base_names: Container[str], name: str) -> str | None:
    """The base's name for a fine-tuned tensor: the same, or without the body prefix; or None."""
    if name in base_names:
        return name
    if arch.body_prefix and name.startswith(arch.body_prefix):
        bare = name[len(arch.body_prefix) :]
        if bare in base_names:
            return bare
    return None
