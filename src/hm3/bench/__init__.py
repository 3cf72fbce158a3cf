"""``hm3 bench``: what merging saves on the user's own models (paper Table 4).

:func:`~hm3.bench.api.bench` measures the N originals and the merged model (and its ONNX
exports) in fresh processes (:mod:`hm3.bench.worker`) on the same texts
(:mod:`hm3.bench.texts`); the command line is :mod:`hm3.cli.bench`.
"""
