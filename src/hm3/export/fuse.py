"""ONNX Runtime's transformer fusions on an exported graph: attention as one operator.

torch traces a layer's self-attention as separate matrix products, a mask, a softmax and the
reshapes between them, so ONNX Runtime materialises every intermediate: at 512 tokens and 32
texts a batch, several ``batch × heads × 512 × 512`` score tensors per layer. :func:`fuse_graph`
rewrites the trace with onnxruntime.transformers' BERT optimizer, which replaces self-attention
with one ``Attention`` operator (query, key and value in one product, the mask applied inside),
the embeddings and their layer norm with ``EmbedLayerNormalization``, the residual layer norms
with ``SkipLayerNormalization`` and GELU with its bias with ``BiasGelu``. The function is the
same (``hm3.export.api`` checks the fused graph against torch on probe texts before anything is
written); on the demo model at 512 tokens the fused graph is faster and takes half the memory
(docs/results/runtime.md).

The fused operators are ONNX Runtime's own (domain ``com.microsoft``): such a graph runs on
ONNX Runtime (CPU, CUDA, Triton's onnxruntime backend), not on engines that know only the
standard operators; ``hm3 export onnx --no-fuse`` writes a standard graph for those. The
optimizer recognises transformers' *eager* attention, so :func:`hm3.export.graph.export_graph`
traces with it. A pattern it does not recognise (DeBERTa's disentangled attention) stays as
traced: :func:`fuse_graph` reports what it fused, and fusing nothing is not an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

_TWO_GB = 2**31


def fuse_graph(file: Path, config: Any) -> dict[str, int]:
    """Rewrite the graph ``file`` in place with ONNX Runtime's fused transformer operators.

    Args:
        file: an ``.onnx`` file written by :func:`hm3.export.graph.export_graph`.
        config: the model's transformers config (its attention heads and hidden size).

    Returns:
        Fused operator → how many the graph now has (operators fused zero times left out).
    """
    from onnxruntime.transformers import optimizer

    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    size = sum(f.stat().st_size for f in file.parent.iterdir() if f.is_file())
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the optimizer's notes on each pattern it did not match
    try:
        model = optimizer.optimize_model(
            str(file), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
        counts = model.get_fused_operator_statistics()
        model.save_model_to_file(str(file), use_external_data_format=size >= _TWO_GB)
    finally:
        logging.disable(previous)
    return {name: int(n) for name, n in sorted(counts.items()) if n}
