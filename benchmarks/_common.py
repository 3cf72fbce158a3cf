"""What the benchmark scripts share: their command-line conventions, the record printed with
every result, markdown tables and the demo's task pools.

- :func:`new_parser`, :func:`add_cache`, :func:`comma_list`, :func:`named`: every script takes
  its description from its docstring, ``--cache`` for the demo cache, comma lists and
  ``NAME=DIR`` pairs the same way.
- :func:`run_record` / :func:`print_record`: the command, the date, the machine, the versions
  and the demo data version, so that a figure copied into ``docs/results/`` says where it came
  from.
- :func:`markdown_table`: the tables the scripts print, ready to paste.
- :func:`demo_max_length`: the token length the demo trains, aligns and evaluates with.
- :func:`task_rows`: a demo task's labelled rows, rebuilt from the cached sources exactly as
  ``hm3 demo`` builds its pools (for ``heldout_suite.py`` and ``source_breakdown.py``).

It measures nothing and runs no model; each script imports only this module from
``benchmarks/`` (a script's own helpers stay in it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose description is the first paragraph of a script's docstring."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])


def add_cache(parser: argparse.ArgumentParser) -> None:
    """``--cache``: the demo cache, as ``hm3 demo --cache`` takes it."""
    parser.add_argument(
        "--cache", type=Path, default=None, help="demo cache (default: HM3_CACHE, ~/.cache/hm3)"
    )


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def named(item: str, flag: str) -> tuple[str, Path]:
    """``NAME=DIR`` → ``(NAME, DIR)``; exits with a one-line message naming ``flag`` otherwise."""
    name, sep, path = item.partition("=")
    if not (sep and name and path):
        sys.exit(f"{flag} {item}: expected NAME=DIR")
    return name, Path(path)


def demo_max_length() -> int:
    """Tokens per text in the demo (training, alignment, evaluation): what the benchmarks read."""
    from hm3.demo.train.classifier import TrainSettings

    return TrainSettings.max_length


def run_record(script: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Where a result comes from: command, UTC date, machine, versions, demo data version."""
    import torch
    import transformers

    from hm3.demo.data.prepare import DATA_VERSION
    from hm3.version import __version__

    args = list(sys.argv[1:] if argv is None else argv)
    return {
        "command": " ".join(["python", f"benchmarks/{script}", *args]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "platform": platform.platform(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "hm3": __version__,
        },
        "demo_data_version": DATA_VERSION,
    }


def print_record(record: dict[str, Any]) -> None:
    """One line per item of :func:`run_record`, to paste above a table."""
    machine, versions = record["machine"], record["versions"]
    print(f"command: {record['command']}")
    print(f"date: {record['date']}; demo data v{record['demo_data_version']}")
    print(
        f"machine: {machine['nproc']} cores (torch {machine['torch_threads']} threads), "
        f"GPU: {machine['cuda'] or 'none'}; {machine['platform']}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()
) -> str:
    """A markdown table; columns flagged in ``numeric`` are right-aligned."""
    marks = [
        "---:" if i < len(numeric) and numeric[i] else "---" for i in range(len(header))
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def task_rows(cache: Path | None, seed: int) -> dict[str, list]:
    """Every demo task's labelled rows (cleaned, deduplicated), as ``hm3 demo`` pools them."""
    from hm3.demo.data.pools import build_pools
    from hm3.demo.data.prepare import TASKS
    from hm3.demo.data.split import dedupe
    from hm3.demo.sources.fetch import cache_root, fetch_sources

    needed = sorted({source for task in TASKS.values() for source in task.sources})
    pools = build_pools(fetch_sources(needed, cache_root(cache)), seed)
    return {name: dedupe(pools.tasks[name].rows)[0] for name in TASKS}
