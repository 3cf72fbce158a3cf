"""``hm3 expand``: HM3-expanded models and a mergekit.yaml, to merge with mergekit.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hm3.cli.common import (
    ForceOpt,
    OutOpt,
    PickleOpt,
    ProgressOpt,
    err_console,
    run_options,
)


def expand(
    config: Annotated[Path, typer.Argument(help="Merge config (YAML).")],
    out: OutOpt,
    force: ForceOpt = False,
    allow_pickle: PickleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Write HM3-expanded models, a zero-head base and a mergekit.yaml to --out."""
    options = run_options(locals())
    from hm3.merging.config import MergeConfig
    from hm3.merging.expanded import expand as do_expand

    cfg = MergeConfig.from_yaml(config)
    path = do_expand(cfg, out, options=options)
    err_console.print(
        f"expanded {len(cfg.models)} models → {path} (run: mergekit-yaml {path}/mergekit.yaml OUT)"
    )
