"""``hm3 expand``: HM3-expanded models and a mergekit.yaml, to merge with mergekit.

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
"""

from __future__ import annotations

from hm3.cli.common import ConfigArg, OutOpt, err_console, with_run_options
from hm3.options import RunOptions


@with_run_options(force=False, allow_pickle=False, progress=True)
def expand(config: ConfigArg, out: OutOpt, *, options: RunOptions) -> None:
    """Write HM3-expanded models, a zero-head base and a mergekit.yaml to --out."""
    from hm3.merging.config import MergeConfig
    from hm3.merging.expanded import expand as do_expand

    cfg = MergeConfig.from_yaml(config)
    path = do_expand(cfg, out, options=options)
    err_console.print(
        f"expanded {len(cfg.models)} models → {path} (run: mergekit-yaml {path}/mergekit.yaml OUT)"
    )
