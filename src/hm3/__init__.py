"""hm3: merge fine-tuned text classifiers with different label spaces into one (HM3).

The public API, imported lazily so that ``import hm3`` stays light::

    import hm3
    hm3.merge(hm3.MergeConfig.from_yaml("merge.yaml"), out="merged/")  # merge (+ align)
    clf = hm3.load("merged/")                                         # any classifier
    clf.predict(["some text"])          # per text, per task: label and probabilities
    clf.predict(texts, windows=hm3.Windows())   # long texts read whole, as `hm3 predict` does
    hm3.align("merged/", "unlabeled.jsonl", "aligned/")               # re-fit the heads

Run options go by name (``hm3.load(path, device="cuda")``) or as one ``hm3.RunOptions``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from hm3.errors import Hm3Error

if TYPE_CHECKING:
    from hm3.alignment.api import align
    from hm3.evaluation.run import evaluate
    from hm3.evaluation.suite import load_suite
    from hm3.merging.config import MergeConfig
    from hm3.model.classifier import Classifier, load
    from hm3.model.windows import Windows
    from hm3.options import RunOptions
    from hm3.recipe import merge
    from hm3.version import __version__

__all__ = [
    "Classifier",
    "Hm3Error",
    "MergeConfig",
    "RunOptions",
    "Windows",
    "__version__",
    "align",
    "evaluate",
    "load",
    "load_suite",
    "merge",
]

_LAZY = {
    "align": "hm3.alignment.api",
    "Classifier": "hm3.model.classifier",
    "load": "hm3.model.classifier",
    "MergeConfig": "hm3.merging.config",
    "evaluate": "hm3.evaluation.run",
    "merge": "hm3.recipe",
    "load_suite": "hm3.evaluation.suite",
    "RunOptions": "hm3.options",
    "Windows": "hm3.model.windows",
    "__version__": "hm3.version",  # importlib.metadata: 40 ms the CLI starts without
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hm3' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted(dunders | set(__all__))  # not this module's own imports
