"""Linear merge (model soup): a weighted average of the models' tensors.

What it does: Σ_i w_i θ_i (divided by Σ_i w_i when normalising), computed in float32 (float64 for
float64 inputs) like mergekit 0.1.5's ``linear``. No base model is involved.
What it does not: validate the weights (done in :meth:`hm3.methods.MergeMethod.merge`) or cast
to the output dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hm3.errors import Hm3Error
from hm3.methods.task_arithmetic import compute_dtype


def linear(tensors: Tensor, weights: Sequence[float], *, normalize: bool = True) -> Tensor:
    """Model soup (Wortsman et al. 2022, uniform/weighted soup): Σ_i w_i θ_i / Σ_i w_i.

    Args:
        tensors: θ_i stacked as [n, *shape]; not modified.
        weights: w_i, one per model.
        normalize: divide by Σ_i w_i (which must then be non-zero).

    Returns:
        The merged tensor in float32 (float64 if the inputs are float64).
    """
    dtype = compute_dtype(tensors)
    w = torch.tensor(list(weights), dtype=dtype, device=tensors.device)
    total = w.sum()
    if normalize and float(total) == 0.0:
        raise Hm3Error(
            f"weights = {list(weights)}: linear divides by their sum, which is zero; change a "
            "weight or set normalize to false"
        )
    merged = torch.zeros(tensors.shape[1:], dtype=dtype, device=tensors.device)
    for i in range(tensors.shape[0]):  # soup: accumulate w_i θ_i
        merged.add_(tensors[i], alpha=float(w[i]))
    return merged.div_(total) if normalize else merged
