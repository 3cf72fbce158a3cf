"""Write an aligned copy of a model directory: same files, new label projection rows.

Every top-level file of the source directory is copied byte for byte (in chunks, never held
in memory), except weights in other formats and subdirectories (an ``onnx/`` export), which
would keep the old heads; then the label projection tensors are overwritten *in place* inside
the copied safetensors file: tensor order, header, metadata and every other tensor keep their
exact bytes. Only ``config.json`` (the ``hm3.align`` record) and ``README.md`` (a "Head
alignment" section, replaced on re-alignment) are rewritten. The caller writes into a
temporary directory (:func:`hm3.io.atomic.atomic_dir`); this module computes nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from hm3.io.checkpoint import Checkpoint, read_safetensors_header

CARD_BEGIN = "<!-- hm3:align -->"
CARD_END = "<!-- /hm3:align -->"
# weights in other formats would keep the old head next to the patched safetensors: not copied
STALE_WEIGHTS = re.compile(
    r"^(pytorch_model.*\.bin(\.index\.json)?|tf_model\.h5|flax_model\.msgpack|.*\.onnx(_data)?)$"
)


def write_aligned(
    src: Path, dest: Path, values: dict[str, torch.Tensor], block: dict[str, Any], section: str
) -> list[str]:
    """Write the aligned copy of ``src`` into the existing (empty) directory ``dest``.

    Args:
        src: the model directory to copy.
        dest: where to write (a temporary directory, renamed into place by the caller).
        values: projection tensor name → new full value (same shape as stored).
        block: the new ``hm3`` block of ``config.json``, with its ``align`` record.
        section: the model card's alignment section (markdown).

    Returns:
        The names of files left out (stale weights in other formats).
    """
    left_out = copy_model_dir(src, dest)
    patch_tensors(dest, values)
    write_config(src, dest, block)
    write_card_section(dest, section)
    return left_out


def copy_model_dir(src: Path, dest: Path) -> list[str]:
    """Copy the top-level files of ``src`` into the existing directory ``dest``.

    Returns:
        The names left out, which would be stale: weights in formats other than safetensors
        (``.onnx`` included) and subdirectories (an ``onnx/`` export, say).
    """
    left_out = []
    for item in sorted(src.iterdir()):
        if item.is_dir():
            left_out.append(item.name + "/")
        elif STALE_WEIGHTS.match(item.name):
            left_out.append(item.name)
        else:
            shutil.copy2(item, dest / item.name)
    return left_out


def patch_tensors(model_dir: Path, values: dict[str, torch.Tensor]) -> None:
    """Overwrite stored tensors of ``model_dir``'s safetensors files with same-shape values.

    Args:
        model_dir: a directory with ``model.safetensors`` (or shards and their index).
        values: tensor name → new value; cast to the stored dtype, shape must match.
    """
    with Checkpoint(model_dir, role="aligned model") as ckpt:
        infos = {name: ckpt.tensors[name] for name in values}
    for name, value in values.items():
        info = infos[name]
        if tuple(value.shape) != info.shape:
            raise RuntimeError(f"{name}: new value {tuple(value.shape)} != stored {info.shape}")
        header, data_start = read_safetensors_header(info.file)
        begin, end = header[name]["data_offsets"]
        data = value.detach().to("cpu", info.dtype).contiguous().reshape(-1).view(torch.uint8)
        raw = data.numpy().tobytes()
        if len(raw) != end - begin:
            raise RuntimeError(f"{name}: {len(raw)} bytes to write into {end - begin}")
        with open(info.file, "r+b") as fh:
            fh.seek(data_start + begin)
            fh.write(raw)


def write_config(src: Path, dest: Path, block: dict[str, Any]) -> dict[str, Any]:
    """Copy ``config.json`` with ``hm3`` replaced by ``block`` (which carries ``align``)."""
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config["hm3"] = block
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


def write_card_section(dest: Path, section: str) -> None:
    """Append the alignment section to ``README.md``, replacing an earlier one (or create it)."""
    card = dest / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    block = f"{CARD_BEGIN}\n{section.strip()}\n{CARD_END}\n"
    pattern = re.compile(re.escape(CARD_BEGIN) + r".*?" + re.escape(CARD_END) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    card.write_text(text, encoding="utf-8")


def render_section(record: dict[str, Any], projection: tuple[str, ...]) -> str:
    """Markdown for the model card: what was re-fitted, on what, and how well."""
    rows = "\n".join(
        f"| `{t['name']}` | `{t['original']}` | {t['ridge']:g} | {t['lambda']:.4g} | "
        f"{t['rmse_before']:.4g} | {t['rmse_after']:.4g} |"
        for t in record["tasks"]
    )
    if record["ridge"] == "auto":
        grid = record["ridge_grid"]
        how = (
            f"each task's ridge chosen by generalised cross-validation on these texts among "
            f"{len(grid)} values from {grid[0]:g} to {grid[-1]:g}"
        )
    else:
        how = f"ridge {record['ridge']:g}"
    tensors = ", ".join(f"`{name}`" for name in projection)
    return f"""## Head alignment

After merging, each task's rows of the label projection ({tensors}) were re-fitted by
hm3 {record["hm3_version"]} so that this model reproduces its original classifier's logits on
{_texts_note(record)}: ridge least squares in closed form
on the input of the projection, {how} (relative to the feature scale: λ in the table), bias
unpenalised.
{_body_note(record)}

| task | original | ridge | λ | logit RMSE before | after |
|---|---|---|---|---|---|
{rows}

The RMSE is measured on the fitting texts (in sample); judge the aligned model on labelled,
held-out data (`hm3 evaluate`).
"""


def _texts_note(record: dict[str, Any]) -> str:
    """The fitting texts: one file for every head, or each task's own."""
    texts, digest, n = record["texts"], record["texts_sha256"], record["n_texts"]
    column = f"column `{record['text_column']}`"
    if isinstance(texts, str):
        return f"{n} unlabeled texts (`{Path(texts).name}`, sha256 `{digest[:16]}…`, {column})"
    files = "; ".join(
        f"`{task}` on {n[task]} of `{Path(path).name}`, sha256 `{digest[task][:16]}…`"
        for task, path in texts.items()
    )
    return f"unlabeled texts, each head on its own task's file only ({column}; {files})"


def _body_note(record: dict[str, Any]) -> str:
    """What happened to the body: nothing, or its task vector scaled (and how it was chosen)."""
    scale = record.get("scale", 1)
    scores = record.get("scale_scores")
    if scale == 1 and scores is None:
        return "Everything else in the model is unchanged."
    chosen = (
        f" ({', '.join(scores)} were tried; the aligned heads' generalised cross-validation "
        "error on these texts, summed over tasks, was lowest at this one)"
        if scores is not None
        else ""
    )
    if scale == 1:
        return f"The merged body was kept as merged: scale 1{chosen}. Everything else is unchanged."
    return (
        f"Before the fit, the merged body's task vector was multiplied by {scale:g}{chosen}: each "
        f"of its {record['scaled_tensors']} tensors that the base model "
        f"(`{record['scale_base_model']}`) also has is now θ_base + {scale:g}·(θ_merged − θ_base). "
        "Everything else in the model is unchanged."
    )
