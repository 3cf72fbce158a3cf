"""``hm3 merge``: N classifiers into one checkpoint (then aligned, if the config says so).

Registered on the ``hm3`` app by :mod:`hm3.cli.app`; exit codes and error printing live there.
"""

from __future__ import annotations

from hm3.cli.common import ConfigArg, OutOpt, err_console, print_alignment, with_run_options
from hm3.options import RunOptions


@with_run_options(force=False, device="cpu", dtype=None, allow_pickle=False, progress=True)
def merge(config: ConfigArg, out: OutOpt, *, options: RunOptions) -> None:
    """Merge the classifiers of CONFIG into one checkpoint at --out (aligned if CONFIG says so).

    With an `align: {texts: FILE}` block in CONFIG, the merged heads are then re-fitted to the
    originals on those unlabeled texts, as `hm3 align` does.
    """
    from hm3.merging.config import MergeConfig
    from hm3.recipe import merge as run_recipe

    cfg = MergeConfig.from_yaml(config)
    result = run_recipe(cfg, out, options=options)
    tasks = ", ".join(f"{t.name} ({len(t.labels)} labels)" for t in result.tasks)
    if result.regmean is not None:
        used = ", ".join(f"{m['n_texts']} ({m['name']})" for m in result.regmean["models"])
        err_console.print(
            f"regmean: {result.regmean['linear_weights']} linear layers solved from each "
            f"model's Gram matrices on its texts: {used}",
            highlight=False,
        )
    err_console.print(  # the time is the whole command's, alignment included
        f"merged {tasks} with {cfg.merge_method} → {result.path} ({result.seconds:.1f} s)"
    )
    if result.alignment is not None:  # the step after the merge, said after it
        print_alignment(result.alignment)
