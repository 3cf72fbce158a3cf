"""The names ``hm3 bench`` gives the ONNX exports it measures (the keys of ``onnx`` and ``runs``).

An export is named after its directory (``onnx8``), as docs/design.md promises; exports whose
directories share a name keep as many parent folders as tell them apart (``a/onnx`` and
``b/onnx``), so no name depends on the order of ``--onnx``. The same directory given twice is
refused. Paths are resolved first (``--onnx .`` is named after the directory). Nothing here
reads an export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hm3.errors import Hm3Error


def export_names(paths: Sequence[str | Path]) -> list[str]:
    """Each export's name, in the order given: its directory's name, with parent folders
    (``a/onnx``) only where two exports' directories share that name."""
    full = [Path(p).resolve() for p in paths]
    for i, path in enumerate(full):
        if path in full[:i]:
            first = paths[full.index(path)]
            raise Hm3Error(
                f"--onnx {paths[i]}: the same export as --onnx {first}; give each export once"
            )
    names = []
    for path in full:
        same = [p for p in full if p.name == path.name]
        keep = 1
        while len({p.parts[-keep:] for p in same}) < len(same):
            keep += 1
        names.append(Path(*path.parts[-keep:]).as_posix())
    return names
