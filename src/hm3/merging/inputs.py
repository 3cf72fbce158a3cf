"""Every local file and directory a merge config reads, so that ``--out`` never replaces one.

The config file itself, the base and the models (where they are local directories), RegMean's
texts and the ``align:`` texts, resolved against the YAML file's directory as the merge
resolves them. Hub ids that are not local paths are left out: they are read from the cache.
"""

from __future__ import annotations

from pathlib import Path

from hm3.merging.config import MergeConfig


def config_inputs(config: MergeConfig) -> list[Path]:
    """The local paths ``config`` reads (those that exist), as ``check_output``'s inputs."""
    refs = [config.base_model, *(m.model for m in config.models)]
    refs += [m.texts for m in config.models if m.texts]
    if config.regmean is not None and config.regmean.texts:
        refs.append(config.regmean.texts)
    if config.align is not None:
        refs += config.align.files()
    found = [Path(config.resolve(ref)).expanduser() for ref in refs]
    if config.path is not None:
        found.insert(0, config.path)
    return [p for p in found if p.exists()]
