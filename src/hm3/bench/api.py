"""``hm3 bench``: the N original classifiers against the merged model, as deployed (paper Table 4).

Systems: ``originals`` (the N single-task classifiers, all loaded, every text through each one
after another: a deployment without hm3), ``merged`` (one forward pass answers every task) and,
optionally, exported ONNX directories of the merged model. Each run of a system is a fresh
process (:mod:`hm3.bench.worker`) on the same texts, batch size, threads and device, so load
time and peak memory are its own. One warm-up round runs every system once, unrecorded (disk
caches, lazy imports); then ``repeats`` rounds, each in a rotated order so no system is always
first, and every figure is the median over the rounds. Ratios are merged (or ONNX) over the
originals; the physical limit of the inference ratio is 1/N (``setup.limit``: docs/design.md).

Timings are not asserted anywhere: they depend on the machine and its load. This module reads
the texts it is given; :mod:`hm3.bench.texts` finds them in files and suites, and
:mod:`hm3.bench.systems` checks the models against each other before any run.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from pydantic import BaseModel

from hm3.bench.systems import MERGED, ORIGINALS, Export, check_systems
from hm3.bench.worker import RunSpec, check_models, model_windows, spawn
from hm3.errors import Hm3Error
from hm3.io.atomic import scratch_dir
from hm3.model.labels import Task
from hm3.model.predictor import check_texts
from hm3.model.windows import Windows, default_labels
from hm3.options import RunOptions, named, resolve_device
from hm3.progress import progress_bar


class Measure(BaseModel):
    load_s: float
    infer_s: float
    peak_mb: float
    infer_cpu_s: float  # CPU seconds of all threads during inference (less noisy when shared)


class Ratio(BaseModel):
    """A system over the originals: load, inference, load + inference, peak memory, and
    inference CPU time."""

    load: float
    infer: float
    total: float
    memory: float
    infer_cpu: float


class OnnxMeasure(Measure):
    ratio: Ratio
    precision: str = "float32"  # what the graph computes in: float32 or int8
    fused: bool = False  # holds ONNX Runtime's fused operators (hm3 export onnx --fuse)


class Setup(BaseModel):
    tasks: list[str]
    texts: int  # texts classified (at most --limit)
    batch_size: int
    max_length: int  # the merged model's effective one: the asked, capped by its positions
    max_lengths: dict[str, int] = {}  # the runs whose effective max length was another
    device: str
    dtype: str = "float32"  # the torch runs' (ONNX exports run in their own precision)
    threads: int
    repeats: int
    windows: bool
    limit: float  # 1/N (not --limit): the inference ratio if merged cost exactly one original


class BenchResult(BaseModel):
    originals: Measure
    merged: Measure
    ratio: Ratio
    onnx: dict[str, OnnxMeasure] = {}
    setup: Setup
    runs: dict[str, list[Measure]]


def bench(
    merged: Path,
    originals: Mapping[str, Path],
    texts: Sequence[str],
    *,
    options: RunOptions | None = None,
    repeats: int = 5,
    threads: int | None = None,
    windows: Windows | None = None,
    onnx: Sequence[Path] = (),
) -> BenchResult:
    """Measure the originals, the merged model and its ONNX exports side by side.

    Args:
        merged: the merged model directory.
        originals: task → its original single-task classifier; one per task of ``merged``.
        texts: the texts every system classifies.
        options: device, dtype (of the torch runs), batch size, max length, allow-pickle,
            progress (:class:`RunOptions`).
        repeats: measured rounds (medians are reported).
        threads: CPU threads of every run (``None``: the runtimes' default).
        windows: score long texts in windows (default: truncate).
        onnx: ``hm3 export onnx`` directories of the merged model, each measured too, under
            its directory's name (:func:`hm3.bench.names.export_names`).

    Raises:
        Hm3Error: task names or labels that do not match, a bad directory (no weights or
            tokenizer, an unknown architecture, not an export, an export given twice), a bad
            default label, no texts, ``repeats < 1``. All are checked before the first run.
    """
    options = options or RunOptions()
    resolve_device(options.device)
    if isinstance(repeats, bool) or repeats < 1:
        raise Hm3Error(f"{named(f'--repeats {repeats}', 'repeats', repeats)}: expected at least 1")
    if threads is not None and threads < 1:
        raise Hm3Error(f"{named(f'--threads {threads}', 'threads', threads)}: expected at least 1")
    if not texts:
        raise Hm3Error("texts: nothing to classify; give a texts file or a suite with rows")
    texts = check_texts(texts)  # one string is one text, not its characters
    ours, systems, exports = check_systems(merged, originals, onnx)
    torch_models = {"--merged": merged, **{f"--originals {t}": p for t, p in originals.items()}}
    check_models(torch_models, onnx, options)
    if windows is not None:
        default_labels(ours, windows.default_labels)  # once, against the merged model's tasks
    with scratch_dir("hm3-bench-") as tmp:
        file = tmp / "texts.json"
        file.write_text(json.dumps(list(texts)), encoding="utf-8")
        specs = {
            name: RunSpec(
                models=[str(path) for path, _ in models],
                runtime=runtime,
                texts=str(file),
                options=asdict(options if runtime == "torch" else options.with_(dtype=None)),
                threads=threads,
                windows=None if windows is None else [model_windows(windows, m) for _, m in models],
            )
            for name, (runtime, models) in systems.items()
        }
        runs = _rounds(specs, repeats, threads, options.progress)
    return _result(runs, ours, len(texts), options, repeats, windows is not None, exports)


def _rounds(
    specs: Mapping[str, RunSpec], repeats: int, threads: int | None, progress: bool
) -> dict[str, list[dict]]:
    """A warm-up round, then ``repeats`` measured ones: each system once a round, each in a fresh
    process, the order rotated every round; the measurements of each system, in order."""
    names = list(specs)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with progress_bar(progress, label="bench: {task.description}") as bar:
        job = bar.add_task("warm-up", total=len(names) * (repeats + 1))
        for round_ in range(repeats + 1):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                bar.update(job, description=f"{name} (round {round_}/{repeats})")
                measured = spawn(specs[name], threads)
                if round_:  # round 0 is the warm-up
                    runs[name].append(measured)
                bar.advance(job)
    return runs


def _median(runs: list[dict]) -> Measure:
    return Measure(**{k: statistics.median(r[k] for r in runs) for k in Measure.model_fields})


def _ratio(system: Measure, base: Measure) -> Ratio:
    def over(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    return Ratio(
        load=over(system.load_s, base.load_s),
        infer=over(system.infer_s, base.infer_s),
        total=over(system.load_s + system.infer_s, base.load_s + base.infer_s),
        memory=over(system.peak_mb, base.peak_mb),
        infer_cpu=over(system.infer_cpu_s, base.infer_cpu_s),
    )


def _result(
    runs: dict[str, list[dict]],
    tasks: list[Task],
    n_texts: int,
    options: RunOptions,
    repeats: int,
    windows: bool,
    exports: dict[str, Export],
) -> BenchResult:
    medians = {name: _median(r) for name, r in runs.items()}
    base = medians[ORIGINALS]
    ran = _ran_with(runs, tasks)
    max_length = ran[MERGED]
    setup = Setup(
        tasks=[t.name for t in tasks],
        texts=n_texts,
        batch_size=options.batch_size,
        max_length=max_length,
        max_lengths={name: n for name, n in ran.items() if n != max_length},
        device=resolve_device(options.device),
        dtype=options.dtype or "float32",
        threads=runs[MERGED][0]["threads"],
        repeats=repeats,
        windows=windows,
        limit=1 / len(tasks),
    )
    return BenchResult(
        originals=base,
        merged=medians[MERGED],
        ratio=_ratio(medians[MERGED], base),
        onnx={
            name: OnnxMeasure(
                **medians[f"onnx:{name}"].model_dump(),
                ratio=_ratio(medians[f"onnx:{name}"], base),
                **asdict(export),
            )
            for name, export in exports.items()
        },
        setup=setup,
        runs={
            name: [Measure(**{k: r[k] for k in Measure.model_fields}) for r in rs]
            for name, rs in runs.items()
        },
    )


def _ran_with(runs: dict[str, list[dict]], tasks: list[Task]) -> dict[str, int]:
    """The max length each model ran with (the asked one capped by its positions)."""
    out = {}
    for name, rs in runs.items():
        labels = [f"{ORIGINALS} {t.name}" for t in tasks] if name == ORIGINALS else [name]
        out.update(zip(labels, rs[0]["max_lengths"], strict=True))
    return out
