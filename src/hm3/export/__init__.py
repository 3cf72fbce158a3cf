"""Export a classifier for the inference engines users already run (``hm3 export onnx``).

:mod:`hm3.export.api` (the workflow), :mod:`~hm3.export.graph` (the traced ONNX graph with the
per-task softmax inside), :mod:`~hm3.export.quantize` (int8 and its decision agreement),
:mod:`~hm3.export.runtime` (``load_onnx``: run an export with ONNX Runtime) and
:mod:`~hm3.export.card` (its README and in-file metadata). Import the submodules; this package
imports nothing, so ``hm3 --help`` stays fast.
"""
