"""One merge method: what it is, which parameters it reads, its checks, and its kernel call.

What it does: :class:`MergeMethod` describes a method (name, pretty name, paper, formula, which
parameters it reads, its defaults, mirroring mergekit 0.1.5's registry), validates inputs once,
and runs the kernel (:func:`~hm3.methods.linear.linear`,
:func:`~hm3.methods.task_arithmetic.generalized_task_arithmetic`,
:func:`~hm3.methods.regmean.regmean` or :func:`~hm3.methods.tsv.tsv_merge`).
What it does not: name the methods (:mod:`hm3.methods.registry` holds them), parse configs, load
tensors or cast the result to the output dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from hm3.errors import Hm3Error
from hm3.methods.linear import linear
from hm3.methods.params import (
    DEFAULT_OPTIONS,
    RANDOM_SPARSIFICATIONS,
    Consensus,
    MergeOptions,
    ModelParams,
    Sparsification,
    check_generators,
    check_model_params,
)
from hm3.methods.regmean import DEFAULT_ALPHA, check_alpha, check_weights, regmean
from hm3.methods.task_arithmetic import generalized_task_arithmetic
from hm3.methods.tsv import tsv_merge


@dataclass(frozen=True)
class MergeMethod:
    """A merge method; its instance ``__doc__`` gives the name, paper and formula."""

    name: str
    pretty_name: str
    reference: str
    formula: str
    kernel: Literal["linear", "task_arithmetic", "regmean", "tsv"]
    sparsification: Sparsification | None = None
    consensus: Consensus | None = None
    default_normalize: bool = False
    default_rescale: bool = False
    in_mergekit: bool = True  # mergekit 0.1.5 has it (so `hm3 expand` can write its config)

    def __post_init__(self) -> None:
        doc = f"{self.pretty_name} (``{self.name}``), {self.reference}\n\n{self.formula}"
        object.__setattr__(self, "__doc__", doc)

    @property
    def uses_base(self) -> bool:
        """Whether the method reads θ_base (every method but ``linear`` and ``regmean``)."""
        return self.kernel in ("task_arithmetic", "tsv")

    @property
    def needs_positive_weights(self) -> bool:
        """Whether weights must be > 0 (they scale each model's share: regmean, tsv)."""
        return self.kernel in ("regmean", "tsv")

    @property
    def is_random(self) -> bool:
        """Whether the method draws random masks (then it needs generators)."""
        return self.sparsification in RANDOM_SPARSIFICATIONS

    @property
    def per_model_parameters(self) -> frozenset[str]:
        """Which of weight/density/gamma/epsilon the method reads."""
        used = {"weight"}
        if self.sparsification is not None:
            used.add("density")
        if self.sparsification == "magnitude_outliers":
            used.add("gamma")
        if self.sparsification == "della_magprune":
            used.add("epsilon")
        return frozenset(used)

    @property
    def global_parameters(self) -> frozenset[str]:
        """Which of normalize/rescale/lambda/alpha (:class:`MergeOptions`) the method reads."""
        if self.kernel == "linear":
            return frozenset({"normalize"})
        if self.kernel == "regmean":
            return frozenset({"alpha"})
        if self.kernel == "tsv":
            return frozenset({"lambda"})
        if self.sparsification is None:  # task_arithmetic: nothing is pruned, so none rescaled
            return frozenset({"normalize", "lambda"})
        return frozenset({"normalize", "rescale", "lambda"})

    def validate(
        self, params: Sequence[ModelParams], options: MergeOptions = DEFAULT_OPTIONS
    ) -> None:
        """Check parameters without merging (configs call this to fail early).

        Args:
            params: one entry per model.
            options: the merge-wide options.

        Returns:
            None. Raises :class:`~hm3.errors.Hm3Error` (a ``ValueError``) naming the bad value.
        """
        if not params:
            raise Hm3Error("models: got none; list at least one model to merge")
        check_model_params(self.name, params, self.per_model_parameters, self.sparsification)
        _check_options(self, options)
        if self.needs_positive_weights:
            check_weights(self.name, [p.weight for p in params])
        if self.kernel == "regmean":
            check_alpha(DEFAULT_ALPHA if options.alpha is None else options.alpha)
        if not math.isfinite(options.lambda_):
            raise Hm3Error(f"lambda = {options.lambda_!r}: expected a finite number")

    def merge(
        self,
        base: Tensor | None,
        tensors: Tensor,
        params: Sequence[ModelParams],
        options: MergeOptions = DEFAULT_OPTIONS,
        generators: Sequence[torch.Generator | None] | None = None,
        *,
        overwrite: bool = False,
        grams: Tensor | None = None,
        decompose: bool = True,
    ) -> Tensor:
        """Merge one tensor of n models.

        Args:
            base: θ_base (ignored by ``linear``; required by the others).
            tensors: the models' tensors stacked as [n, *shape]; not modified unless
                ``overwrite``.
            params: per-model parameters, one per model, in order.
            options: normalize/rescale (``None`` = method default) and lambda.
            generators: one ``torch.Generator`` per model on the tensors' device; needed by
                the random methods for every model whose density is below 1.
            overwrite: let the method use ``tensors`` as its working buffer (its values are
                then undefined); same result, n tensors' less memory for the task-vector
                methods.
            grams: ``regmean`` only: the models' Gram matrices of this linear weight's
                inputs, stacked as [n, in, in]; without them (a bias, a LayerNorm, an
                embedding) ``regmean`` takes the weighted mean, as the paper does.
            decompose: ``tsv`` only: merge a 2-D tensor in its singular vectors; ``False``
                (hm3 passes it for the label projection) takes the weighted mean of task vectors.

        Returns:
            The merged tensor, float32 (float64 if an input is float64); the caller casts.
        """
        self.validate(params, options)
        _check_tensors(self, base, tensors, len(params))
        normalize = self.default_normalize if options.normalize is None else options.normalize
        with torch.no_grad():
            weights = [p.weight for p in params]
            if self.kernel == "regmean":
                alpha = DEFAULT_ALPHA if options.alpha is None else options.alpha
                if grams is None:
                    return linear(tensors, weights, normalize=True)
                return regmean(tensors, grams, weights, alpha)
            if self.kernel == "linear":
                return linear(tensors, weights, normalize=normalize)
            if self.kernel == "tsv":
                return tsv_merge(
                    base, tensors, weights, lambda_=options.lambda_, decompose=decompose,
                    overwrite=overwrite,
                )  # fmt: skip
            if self.is_random:
                check_generators(self.name, params, generators, tensors.device)
            rescale = self.default_rescale if options.rescale is None else options.rescale
            return generalized_task_arithmetic(
                base, tensors, params, sparsification=self.sparsification,
                consensus=self.consensus, normalize=normalize, rescale=rescale,
                lambda_=options.lambda_, generators=generators, overwrite=overwrite,
            )  # fmt: skip


def _check_options(method: MergeMethod, options: MergeOptions) -> None:
    given = {
        "normalize": options.normalize is not None,
        "rescale": options.rescale is not None,
        "lambda": options.lambda_ != 1,
        "alpha": options.alpha is not None,
    }
    unused = [name for name, set_ in given.items() if set_ and name not in method.global_parameters]
    if unused:
        reads = ", ".join(sorted(method.global_parameters))
        raise Hm3Error(
            f"parameters: {', '.join(unused)} not used by {method.name!r} (it reads {reads}); "
            f"remove {', '.join(unused)}"
        )


def _check_tensors(method: MergeMethod, base: Tensor | None, tensors: Tensor, n: int) -> None:
    if not tensors.is_floating_point() or tensors.ndim < 1 or tensors.shape[0] != n:
        raise Hm3Error(
            f"tensors: got {tuple(tensors.shape)} {tensors.dtype}; expected a floating tensor "
            f"stacked as [n_models={n}, ...]; stack one tensor per model with torch.stack"
        )
    if not method.uses_base:
        return
    if base is None:
        raise Hm3Error(f"base: got None; {method.name!r} needs the base model's tensor")
    same = base.shape == tensors.shape[1:] and base.device == tensors.device
    if not same or not base.is_floating_point():
        raise Hm3Error(
            f"base: got {tuple(base.shape)} {base.dtype} on {base.device}; expected floating "
            f"{tuple(tensors.shape[1:])} on {tensors.device} like each model's tensor"
        )
