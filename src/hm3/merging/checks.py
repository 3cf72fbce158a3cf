"""Check that the checkpoints of a merge fit together, before anything is merged.

One architecture, hidden size and depth for every model and the base (:func:`check_family`), the
same tensors in every fine-tuned model (:func:`same_tensors`), a base that has most body tensors
(:func:`check_counterparts`) and one tokenizer vocabulary (:func:`check_vocab`). Each raises
:class:`~hm3.errors.Hm3Error` naming the checkpoint and the fix; none reads a weight.
"""

from __future__ import annotations

from hm3.errors import Hm3Error
from hm3.io.checkpoint import Checkpoint
from hm3.io.tokenizer import vocab_fingerprint
from hm3.model.architectures import Architecture

# config.json keys that give a model's depth, by family (BERT and most; GPT-2; DistilBERT; T5)
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")


def check_family(arch: Architecture, base: Checkpoint, models: list[Checkpoint]) -> None:
    """One architecture, hidden size and number of layers for every model and the base."""
    first = models[0]
    size = arch.hidden_size(first.config)
    for ckpt in [*models[1:], base]:
        model_type = ckpt.config.get("model_type")
        if model_type is not None and model_type != first.config.get("model_type"):
            raise Hm3Error(
                f"{ckpt.label}: architecture {model_type!r} differs from {first.label} "
                f"({first.config.get('model_type')!r}); hm3 merges models fine-tuned from one base"
            )
        other = arch.hidden_size(ckpt.config)
        if size is not None and other is not None and other != size:
            raise Hm3Error(
                f"{ckpt.label}: hidden size {other} differs from {first.label} ({size}); "
                "hm3 merges models fine-tuned from one base"
            )
        _check_depth(first, ckpt)


def _check_depth(first: Checkpoint, other: Checkpoint) -> None:
    for key in DEPTH_KEYS:
        ours, theirs = first.config.get(key), other.config.get(key)
        if ours is not None and theirs is not None and ours != theirs:
            raise Hm3Error(
                f"{other.label}: {theirs} layers ({key}) but {first.label} has {ours}; hm3 "
                "merges models fine-tuned from one base, so give the base they all started from"
            )


def check_counterparts(
    arch: Architecture, base: Checkpoint, first: Checkpoint, missing: list[str], float_plans: list
) -> None:
    """Refuse a base that lacks most body tensors: a wrong base, or names hm3 cannot map."""
    body = len(float_plans) - len(arch.projection)
    if len(missing) * 2 <= body:
        return
    prefix = f"the prefix `{arch.body_prefix}`" if arch.body_prefix else "any one leading prefix"
    raise Hm3Error(
        f"{base.label}: {len(missing)} of {body} body tensors of {first.label} have no "
        f"counterpart in the base (e.g. {missing[0]}), with or without {prefix}; expected the "
        "model they were fine-tuned from (same tensor names, up to a prefix like `bert.`); "
        "check base_model"
    )


def same_tensors(arch: Architecture, first: Checkpoint, other: Checkpoint) -> None:
    names, theirs = set(first.tensors), set(other.tensors)
    if names != theirs:
        diff = sorted(names ^ theirs)[:3]
        raise Hm3Error(
            f"{other.label}: its tensors differ from {first.label}'s (e.g. {', '.join(diff)}); "
            "merged models must share one architecture"
        )
    for name, info in first.tensors.items():
        shape = other.tensors[name].shape
        if not arch.is_projection(name) and shape != info.shape:
            fix = "merged models must share one base"
            if (shape[0], info.shape[0]) in _label_counts(arch, first, other):  # a head tensor
                fix = f"{name} has one row per label: add it to heads: projection"
            raise Hm3Error(
                f"{other.label}: tensor {name} has shape {list(shape)} but {first.label}'s is "
                f"{list(info.shape)}; {fix}"
            )
        if arch.is_projection(name) and shape[1:] != info.shape[1:]:
            raise Hm3Error(
                f"{other.label}: label projection {name} has input size {list(shape[1:])}, "
                f"{first.label}'s has {list(info.shape[1:])}; hidden sizes differ"
            )


def check_vocab(base: Checkpoint, models: list[Checkpoint]) -> None:
    reference: tuple[str, str] | None = None
    for ckpt in (base, *models):
        fingerprint = vocab_fingerprint(ckpt.path)
        if fingerprint is None:
            continue
        if reference is None:
            reference = (fingerprint, ckpt.label)
        elif fingerprint != reference[0]:
            raise Hm3Error(
                f"{ckpt.label}: its tokenizer vocabulary differs from {reference[1]}'s; merged "
                "models must tokenize text the same way (fine-tune them from the same base)"
            )


def _label_counts(arch: Architecture, first: Checkpoint, other: Checkpoint) -> set[tuple]:
    """(other's, first's) row counts of each label projection: a tensor that differs from one
    model to the next by just these rows is part of the classification head."""
    return {(other.tensors[n].shape[0], info.shape[0]) for n, info in first.tensors.items()
            if arch.is_projection(n) and n in other.tensors}  # fmt: skip
