"""Merge methods as pure tensor math: stacked tensors in, one tensor out.

What it does: the methods hm3 merges with, numerically equal to mergekit 0.1.5's on the same
inputs (see ``tests/test_methods_parity.py``): ``linear``, ``task_arithmetic``, ``ties``,
``dare_ties``, ``dare_linear``, ``breadcrumbs``, ``breadcrumbs_ties``, ``della``,
``della_linear``; and two methods mergekit does not have: ``regmean``
(:mod:`hm3.methods.regmean`: it needs each model's Gram matrices, passed as ``grams=``; checked
against its least-squares definition in ``tests/test_regmean.py``) and ``tsv``
(:mod:`hm3.methods.tsv`, TSV-Merge; ``decompose=False`` merges a matrix as its mean task vector;
checked against a NumPy transcription of the paper in ``tests/test_tsv.py``).
What it does not: I/O, ``transformers``, config parsing, casting to the output dtype, or the
global random state (all randomness comes from the ``torch.Generator`` objects passed in).

API::

    method = get_method("dare_ties")           # unknown name -> ValueError listing valid names
    merged = method.merge(
        base,                                  # θ_base [*shape], or None for ``linear``
        tensors,                               # θ_i stacked [n, *shape], not modified...
        [ModelParams(weight=1.0, density=0.5), ...],   # one per model
        MergeOptions(normalize=None, rescale=None, lambda_=1.0),  # None = method default
        generators=[torch.Generator().manual_seed(s) for s in seeds],  # one per model
        overwrite=False,                       # ...unless True: then it is the work buffer
    )                                          # -> float32 (float64 for float64 inputs)

``MergeMethod`` fields: ``name``, ``pretty_name``, ``reference`` (paper URL), ``formula``,
``kernel``, ``sparsification`` (``magnitude`` | ``random`` | ``magnitude_outliers`` |
``della_magprune`` | None), ``consensus`` (``sum`` | ``count`` | None), ``default_normalize``,
``default_rescale``, ``in_mergekit``; properties ``uses_base``, ``is_random``,
``per_model_parameters`` (which of weight/density/gamma/epsilon it reads), ``global_parameters``
(which of normalize/rescale/lambda/alpha it reads); ``validate(params, options)`` checks without
merging.
``METHODS`` maps every name to its method.

Randomness contract: model i's mask is one ``torch.bernoulli(probs, generator=generators[i])``
draw per call (on CPU in float32, DARE draws the same mask faster with ``torch.rand``), models
in order, and only for models whose density is below 1. Listing a model twice with two
differently seeded generators gives two independent masks (paper 5.4).

Building blocks (for tests and the search engine): :func:`magnitude_mask`,
:func:`outlier_mask`, :func:`top_k_count`, :func:`outlier_window`, :func:`rank_window_mask`,
:func:`order_statistics`, :func:`della_probabilities`, :func:`rescale_l1_`, :func:`sparsify_`
and its in-place variants, :func:`elected_sign`, :func:`consensus_mask`, :func:`task_vectors`,
:func:`generalized_task_arithmetic`, :func:`linear`.

Errors are :class:`hm3.errors.Hm3Error`, a ``ValueError`` naming the parameter, its value,
what was expected and the fix.
"""

from __future__ import annotations

from hm3.methods.linear import linear
from hm3.methods.masks import (
    della_probabilities,
    magnitude_mask,
    order_statistics,
    outlier_mask,
    outlier_window,
    rank_window_mask,
    top_k_count,
)
from hm3.methods.method import MergeMethod
from hm3.methods.params import Consensus, MergeOptions, ModelParams, Sparsification
from hm3.methods.registry import METHODS, get_method
from hm3.methods.regmean import RegMeanSums, regmean
from hm3.methods.sparsify import (
    della_magprune_,
    magnitude_,
    magnitude_outliers_,
    random_,
    rescale_l1_,
    sparsify_,
)
from hm3.methods.task_arithmetic import (
    compute_dtype,
    consensus_mask,
    elected_sign,
    generalized_task_arithmetic,
    task_vectors,
)
from hm3.methods.tsv import polar_factor, singular_merge, tsv_merge

__all__ = [
    "METHODS",
    "Consensus",
    "MergeMethod",
    "MergeOptions",
    "ModelParams",
    "RegMeanSums",
    "Sparsification",
    "compute_dtype",
    "consensus_mask",
    "della_magprune_",
    "della_probabilities",
    "elected_sign",
    "generalized_task_arithmetic",
    "get_method",
    "linear",
    "magnitude_",
    "magnitude_mask",
    "magnitude_outliers_",
    "order_statistics",
    "outlier_mask",
    "outlier_window",
    "polar_factor",
    "random_",
    "rank_window_mask",
    "regmean",
    "rescale_l1_",
    "singular_merge",
    "sparsify_",
    "task_vectors",
    "top_k_count",
    "tsv_merge",
]
