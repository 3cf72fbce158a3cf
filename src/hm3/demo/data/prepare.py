"""The demo zoo's data: four real tasks, fixed seeded splits and an evaluation suite, on disk.

:func:`prepare_data` fetches the pinned sources (:mod:`hm3.demo.sources.fetch`), maps them onto the
tasks of :data:`TASKS` (:mod:`hm3.demo.data.pools` documents every mapping), deduplicates, cuts
stratified seeded splits (:mod:`hm3.demo.data.split`) and writes, under
``<cache>/data/v<DATA_VERSION>/seed<seed>-<full|quick|custom-...>/``::

    <task>/{train,validation,test}.jsonl   rows {"text": ..., "label": ...}
    unlabeled.jsonl                        {"text": ...} from every task's train split
    benign_control.jsonl                   {"text": ...} that no guard should flag
    suite.yaml, suite/*.jsonl              paper-style suite (see :mod:`hm3.demo.data.suite`)
    test_suite.yaml                        each task's test file with per-row labels
    manifest.json                          settings, row counts, label balance, file hashes

The same seed and sizes give byte-identical files on any machine; a second call with the same
settings reuses them (checked against the manifest's hashes). Everything is written to a
temporary directory and renamed into place. This module trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

from hm3.demo.data.pools import build_pools
from hm3.demo.data.spec import FULL, QUICK, TASKS, SplitSizes, TaskSpec
from hm3.demo.data.split import SPLITS, dedupe, split_rows
from hm3.demo.data.suite import CONTROL, SUITE, TEST_SUITE, UNLABELED, write_extras, write_jsonl
from hm3.demo.sources.fetch import cache_root, fetch_sources
from hm3.demo.sources.pins import SOURCES
from hm3.errors import Hm3Error, spell
from hm3.io.texts import sha256_file
from hm3.options import named

__all__ = ["DATA_VERSION", "DemoData", "TaskData", "prepare_data"]

DATA_VERSION = 2  # bump whenever a change here or in data_* changes the files
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TaskData:
    """One task's files and what is in them."""

    spec: TaskSpec
    files: Mapping[str, Path]  # split -> JSONL path
    counts: Mapping[str, Mapping[str, int]]  # split -> label -> rows (the label balance)
    sources: Mapping[str, Mapping[str, int]]  # split -> source -> rows
    notes: Mapping[str, int]  # rows left out, by reason

    @property
    def train(self) -> Path:
        return self.files["train"]

    @property
    def validation(self) -> Path:
        return self.files["validation"]

    @property
    def test(self) -> Path:
        return self.files["test"]


@dataclass(frozen=True)
class DemoData:
    """Everything :func:`prepare_data` wrote (paths are absolute) and its statistics."""

    root: Path
    seed: int
    sizes: SplitSizes
    tasks: Mapping[str, TaskData]
    unlabeled: Path
    benign_control: Path
    suite: Path
    test_suite: Path
    manifest: Path
    suite_datasets: tuple[Mapping, ...]  # name, path (relative to root), rows, expect
    overlaps: Mapping[str, int]  # "task_a/task_b" -> texts shared across tasks (expected 0)
    sources: Mapping[str, Mapping[str, str]]  # source -> spec, sha256, license
    reused: bool = field(default=False, compare=False)


def check_seed(seed: int) -> None:
    """The demo's seed: a whole number >= 0 (numpy's generators take no other)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise Hm3Error(f"{named(f'--seed {seed}', 'seed', seed)}: expected a non-negative "
                       f"integer; pass e.g. {spell('--seed 0', 'seed=0')}")  # fmt: skip


def prepare_data(
    cache_dir: Path | None = None,
    *,
    seed: int = 0,
    quick: bool = False,
    sizes: SplitSizes | None = None,
) -> DemoData:
    """Write (or reuse) the demo's splits, suites, control and unlabeled texts.

    Args:
        cache_dir: the cache root (default ``$HM3_CACHE`` or ``~/.cache/hm3``); sources are
            fetched into it when missing.
        seed: seeds every split and sample; the same seed gives byte-identical files.
        quick: use :data:`QUICK` sizes (far fewer rows, same code path) instead of :data:`FULL`.
        sizes: explicit sizes, overriding ``quick``.

    Returns:
        The :class:`DemoData` with every path and the row counts per task, split and label.
    """
    check_seed(seed)
    sizes = sizes or (QUICK if quick else FULL)
    root = cache_root(cache_dir)
    out = root / "data" / f"v{DATA_VERSION}" / _profile(seed, sizes)
    settings = {
        "data_version": DATA_VERSION,
        "seed": seed,
        "sizes": asdict(sizes),
        "sources": {n: SOURCES[n].sha256 for n in _needed()},
    }
    manifest = _reusable(out, settings)
    if manifest is not None:
        return _demo_data(out, manifest, reused=True)
    dirs = fetch_sources(_needed(), root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-"))
    tmp.chmod(0o755)
    try:
        manifest = _build(tmp, dirs, settings, seed, sizes)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _demo_data(out, manifest, reused=False)


def _needed() -> list[str]:
    return sorted({s for t in TASKS.values() for s in t.sources})


def _profile(seed: int, sizes: SplitSizes) -> str:
    if sizes in (FULL, QUICK):
        return f"seed{seed}-{'full' if sizes == FULL else 'quick'}"
    digest = hashlib.sha256(json.dumps(asdict(sizes), sort_keys=True).encode()).hexdigest()
    return f"seed{seed}-custom-{digest[:10]}"


def _build(tmp: Path, dirs: dict[str, Path], settings: dict, seed: int, sizes: SplitSizes) -> dict:
    pools = build_pools(dirs, seed)
    splits, tasks = {}, {}
    for name, spec in TASKS.items():
        rows, notes = dedupe(pools.tasks[name].rows)
        splits[name], split_notes = split_rows(
            rows, spec.labels, sizes.per_label(len(spec.labels)), seed, name
        )
        for split, chosen in splits[name].items():
            write_jsonl(
                tmp / name / f"{split}.jsonl", ({"text": r.text, "label": r.label} for r in chosen)
            )
        _check_labels(name, spec, splits[name])
        tasks[name] = {
            "labels": list(spec.labels),
            "files": {s: f"{name}/{s}.jsonl" for s in SPLITS},
            "counts": {s: _count(r.label for r in v) for s, v in splits[name].items()},
            "sources": {s: _count(r.source for r in v) for s, v in splits[name].items()},
            "notes": {**dict(sorted(pools.tasks[name].dropped.items())), **notes, **split_notes},
        }
    extras = write_extras(
        tmp,
        splits,
        {n: t.labels for n, t in TASKS.items()},
        pools.control,
        pools.lexicon,
        asdict(sizes),
        seed,
    )
    manifest = {
        "format": "hm3-demo-data",
        "settings": settings,
        "tasks": tasks,
        "unlabeled": UNLABELED,
        "benign_control": CONTROL,
        "suite": SUITE,
        "test_suite": TEST_SUITE,
        "suite_datasets": extras["datasets"],
        "overlaps": _overlaps(splits),
        "sources": {
            n: {"spec": SOURCES[n].spec, "sha256": SOURCES[n].sha256, "license": SOURCES[n].license}
            for n in _needed()
        },
    }
    manifest["files"] = {
        p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
    }
    (tmp / MANIFEST).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest


def _check_labels(name: str, spec: TaskSpec, splits: Mapping[str, list]) -> None:
    for split, rows in splits.items():
        missing = set(spec.labels) - {r.label for r in rows}
        if missing:
            raise Hm3Error(
                f"demo data {name}/{split}: no rows for {', '.join(sorted(missing))};"
                f" expected every label in every split; use larger SplitSizes"
            )


def _count(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _overlaps(splits: Mapping[str, Mapping[str, list]]) -> dict[str, int]:
    keys = {t: {r.text.casefold() for rows in s.values() for r in rows} for t, s in splits.items()}
    names = list(keys)
    return {f"{a}/{b}": len(keys[a] & keys[b]) for i, a in enumerate(names) for b in names[i + 1 :]}


def _reusable(out: Path, settings: dict) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("settings") != settings:
        return None
    for rel, digest in manifest.get("files", {}).items():
        path = out / rel
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return manifest


def _publish(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``, replacing an outdated ``out`` (moved aside first)."""
    if out.exists():
        stale = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".old-{out.name}-"))
        os.replace(out, stale / "data")
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, out)


def _demo_data(out: Path, manifest: dict, *, reused: bool) -> DemoData:
    tasks = {
        name: TaskData(
            spec=TASKS[name],
            files=MappingProxyType({s: out / p for s, p in t["files"].items()}),
            counts=MappingProxyType(t["counts"]),
            sources=MappingProxyType(t["sources"]),
            notes=MappingProxyType(t["notes"]),
        )
        for name, t in manifest["tasks"].items()
    }
    settings = manifest["settings"]
    return DemoData(
        root=out,
        seed=settings["seed"],
        sizes=SplitSizes(**settings["sizes"]),
        tasks=MappingProxyType(tasks),
        unlabeled=out / manifest["unlabeled"],
        benign_control=out / manifest["benign_control"],
        suite=out / manifest["suite"],
        test_suite=out / manifest["test_suite"],
        manifest=out / MANIFEST,
        suite_datasets=tuple(manifest["suite_datasets"]),
        overlaps=MappingProxyType(manifest["overlaps"]),
        sources=MappingProxyType(manifest["sources"]),
        reused=reused,
    )
