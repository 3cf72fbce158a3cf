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
- :func:`shuffled_pools`, :func:`draw_texts`, :func:`read_texts`, :func:`write_texts`: seeded
  unlabeled text sets from the demo's train splits (``align_ablation.py``'s ``all N`` sets,
  ``search_quality.py --align-texts N``).

It measures nothing and runs no model; each script imports only this module from
``benchmarks/`` (a script's own helpers stay in it).
"""

from __future__ import annotations

import argparse
import datetime
import json
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
    from hm3.demo.train.loop import TrainSettings

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
    marks = ["---:" if i < len(numeric) and numeric[i] else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def task_rows(cache: Path | None, seed: int) -> dict[str, list]:
    """Every demo task's labelled rows (cleaned, deduplicated), as ``hm3 demo`` pools them."""
    from hm3.demo.data.pools import build_pools
    from hm3.demo.data.spec import TASKS
    from hm3.demo.data.split import dedupe
    from hm3.demo.sources.fetch import cache_root, fetch_sources

    needed = sorted({source for task in TASKS.values() for source in task.sources})
    pools = build_pools(fetch_sources(needed, cache_root(cache)), seed)
    return {name: dedupe(pools.tasks[name].rows)[0] for name in TASKS}


def search_inputs(
    cache: Path | None,
    work: Path,
    case_name: str,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """``hm3 search``'s inputs on one demo case, written under ``work`` (for the search scripts).

    Returns paths by name: ``config`` (the demo's DARE-TIES recipe of the case as a merge YAML,
    with the keys of ``extra`` added, e.g. a ``search:`` or ``align:`` block), ``val_suite``
    (the demo's validation suite for the case's tasks: :mod:`hm3.demo.data.validation`),
    ``test_suite`` (the demo's ``suite.yaml``, which Table 1 reports, restricted to the case's
    tasks), ``texts`` (the case's tasks' unlabeled texts, as ``hm3 demo`` aligns on them) and
    ``base`` (the base encoder).
    """
    import json

    import yaml

    from hm3.demo.cases import CASES, METHODS, merge_config, train_zoo
    from hm3.demo.data.prepare import prepare_data
    from hm3.demo.data.validation import write_validation_suite
    from hm3.demo.sources.fetch import base_model_dir
    from hm3.evaluation.suite import load_suite

    case = next((c for c in CASES if c.name == case_name), None)
    if case is None:
        sys.exit(f"case {case_name}: expected one of {', '.join(c.name for c in CASES)}")
    base = base_model_dir(cache)
    data = prepare_data(cache, seed=seed)
    zoo = train_zoo(base, data, cache, seed=seed, progress=False)
    work.mkdir(parents=True, exist_ok=True)
    spec = next(m for m in METHODS if m.method == "dare_ties")
    doc = yaml.safe_load(merge_config(case, spec, base, zoo, seed).to_yaml())
    config = work / f"{case.name}.yaml"
    config.write_text(yaml.safe_dump({**doc, **(extra or {})}, sort_keys=False), "utf-8")
    val = write_validation_suite(data, work / "val", case.tasks, cache)
    suite = load_suite(data.suite).restricted(case.tasks)
    test = suite.model_dump(mode="json", exclude_none=True)
    for entry, spec_ in zip(test["datasets"], suite.datasets, strict=True):
        entry["path"] = str(suite.resolve(spec_))
    test_path = work / f"{case.name}-test_suite.yaml"
    test_path.write_text(yaml.safe_dump(test, sort_keys=False), "utf-8")
    own = set()
    for task in case.tasks:
        with open(data.tasks[task].train, encoding="utf-8") as fh:
            own |= {json.loads(line)["text"] for line in fh if line.strip()}
    texts = work / f"{case.name}-unlabeled.jsonl"
    with open(data.unlabeled, encoding="utf-8") as src, open(texts, "w", encoding="utf-8") as dst:
        for line in src:
            if line.strip() and json.loads(line)["text"] in own:
                dst.write(line)
    return {
        "config": config,
        "val_suite": val,
        "test_suite": test_path,
        "texts": texts,
        "base": base,
    }


def read_texts(path: Path) -> list[str]:
    """The non-empty ``text`` of every row of a JSON-lines file."""
    with path.open(encoding="utf-8") as f:
        return [t for t in (json.loads(line).get("text") for line in f if line.strip()) if t]


def write_texts(path: Path, texts: Sequence[str]) -> Path:
    """``texts`` as JSON-lines rows ``{"text": ...}`` at ``path`` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    return path


def shuffled_pools(data: Any, seed: int) -> dict[str, list[str]]:
    """Every demo task's train texts and the benign control (``ood``), each in one seeded order.

    ``data`` is a :class:`hm3.demo.data.prepare.DemoData`.
    """
    import numpy as np

    from hm3.demo.data.spec import TASKS

    files = {name: data.tasks[name].train for name in TASKS} | {"ood": data.benign_control}
    pools = {}
    for i, (name, path) in enumerate(files.items()):
        texts = read_texts(path)
        order = np.random.default_rng([seed, i]).permutation(len(texts))
        pools[name] = [texts[j] for j in order]
    return pools


def draw_texts(pools: dict[str, list[str]], sources: Sequence[str], n: int) -> list[str]:
    """``n`` texts evenly from ``sources`` (the first ``n % len`` give one more): pool prefixes,
    so a smaller set is part of a larger one."""
    out = []
    for i, name in enumerate(sources):
        k = n // len(sources) + (i < n % len(sources))
        if k > len(pools[name]):
            print(f"  note: {name} has {len(pools[name])} texts, {k} asked; taking all")
        out += pools[name][:k]
    return out
