"""One measured run of ``hm3 bench``, in a fresh process: load, warm up, infer, peak memory.

``python -m hm3.bench.worker`` reads a :class:`RunSpec` (JSON) on stdin: the model directories
of one system (the N originals, or the merged model, torch or ONNX), the texts file and the run
options. It imports its libraries and the model code first, then notes the process's resident
memory (the baseline), loads every model (``load_s``: the wall time until all N are ready, as
a deployment that serves them holds them all), runs every text through each once unmeasured
(the warm-up: each padded batch shape meets its kernels and buffers once, as in a server that
has been up a while), then every text through each model in turn (``infer_s``;
``infer_cpu_s``: the CPU time of all the process's threads meanwhile, less sensitive than wall
time to other work on a shared machine),
and prints one JSON line: ``load_s``, ``infer_s``, ``infer_cpu_s`` and ``peak_mb``, the peak
resident memory above the baseline (the process's high-water mark; on CUDA,
``torch.cuda.max_memory_allocated``), and each model's effective ``max_lengths`` (the asked
one capped by its positions). A fresh process per run is what makes the peak honest: nothing
another run allocated is counted.

A user error (:class:`~hm3.errors.Hm3Error`) exits 2 with one JSON line ``{"error": ...}`` on
stdout (and its line on stderr); anything else is a traceback and exit 1. This module is
started by :mod:`hm3.bench.api`; it parses no command line. The parent's side of the protocol
is here too: :func:`spawn` runs a :class:`RunSpec` and passes a user error back as one line,
:func:`check_models` refuses before any run what would stop one, and :func:`model_windows`
gives each model its own default labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hm3.errors import Hm3Error, cli_spelling, spelling_for_cli

_CLI_ENV = "HM3_CLI_SPELLING"  # set by spawn() when the parent runs a CLI command

if TYPE_CHECKING:
    from hm3.model.labels import Task
    from hm3.model.windows import Windows
    from hm3.options import RunOptions


@dataclass(frozen=True)
class RunSpec:
    """What one worker runs. ``runtime``: ``torch`` or ``onnx``; ``options``: RunOptions fields;
    ``windows``: ``None`` (truncate), or per model the fields of its
    :class:`~hm3.model.windows.Windows` (default labels under that model's own names)."""

    models: list[str]
    runtime: str
    texts: str
    options: dict[str, Any]
    threads: int | None = None
    windows: list[dict[str, Any]] | None = None


def model_windows(windows: Windows, pairs: Sequence[tuple[Task, Task]]) -> dict[str, Any]:
    """The :class:`RunSpec` ``windows`` entry of one model, given as (merged task, the model's
    task answering it) pairs: only its tasks' default labels, under its own task and label
    names (placeholder labels by position), as ``hm3 evaluate`` gives each original its own."""
    given, defaults = windows.default_labels, {}
    for task, mine in pairs:
        if task.name in given:
            label = given[task.name]
            same = set(mine.labels) == set(task.labels)
            defaults[mine.name] = label if same else mine.labels[task.labels.index(label)]
    return asdict(replace(windows, default_labels=defaults))


def check_models(
    torch_models: Mapping[str, str | Path], onnx: Sequence[str | Path], options: RunOptions
) -> None:
    """Refuse, before any run, what would stop one: missing, pickled or truncated weights
    (headers only), an unknown architecture or no tokenizer files in a torch model directory
    (option → directory); for an export, no onnxruntime (or its device), or a directory that
    ONNX Runtime cannot open (a cut-short graph, no tokenizer files).
    """
    from hm3.io.checkpoint import Checkpoint
    from hm3.io.tokenizer import has_tokenizer

    for option, path in torch_models.items():
        with Checkpoint(Path(path), allow_pickle=options.allow_pickle, role=option):
            pass
        check_model_type(path, f"{option} {path}")
    for option, path in torch_models.items():  # an export's: read_export's (check_systems)
        if not has_tokenizer(Path(path)):
            raise Hm3Error(
                f"{option} {path}: no tokenizer files (tokenizer.json or vocab.txt); copy them "
                "from the base model"
            )
    if onnx:
        from hm3.export.runtime import load_onnx, providers, require

        require("onnxruntime")
        providers(options.device)
        for path in onnx:  # its graph parsed, its outputs and tokenizer there: opened once here
            load_onnx(path, options=options.with_(dtype=None), threads=1)  # as its runs


def rss_mb() -> float:
    """The resident memory of this process now, in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB: ``VmHWM`` of ``/proc/self/status``.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries the parent's peak into a child over fork
    and exec, so a child of a big parent would report the parent's peak.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def run(spec: RunSpec) -> dict[str, Any]:
    """Measure one system; see the module docstring."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline, as every run does)

    from hm3.model.windows import Windows
    from hm3.options import RunOptions, resolve_device

    if spec.threads:
        torch.set_num_threads(spec.threads)
    options = RunOptions(**spec.options)
    device = resolve_device(options.device)
    cuda = device.startswith("cuda")
    loader = _loader(spec, options)
    with open(spec.texts, encoding="utf-8") as f:
        texts = json.load(f)
    rules = [Windows(**w) for w in spec.windows] if spec.windows is not None else None
    base = rss_mb()
    start = time.perf_counter()
    models = [loader(path) for path in spec.models]
    _sync(cuda)
    load_s = time.perf_counter() - start
    runs = list(zip(models, rules or [None] * len(models), strict=True))
    # warm-up: a whole pass each. One batch is not enough: every new padded length costs once,
    # and that cost, paid once per process, was inside the merged model's one pass but spread
    # over the originals' N passes (about 4 % of a pass of MiniLM on 2 cores)
    for model, rule in runs:
        model.predict_proba(texts, options.batch_size, rule)
    _sync(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start, cpu = time.perf_counter(), time.process_time()
    for model, rule in runs:
        model.predict_proba(texts, options.batch_size, rule)
    _sync(cuda)
    infer_s, infer_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb() - base
    return {
        "load_s": load_s,
        "infer_s": infer_s,
        "infer_cpu_s": infer_cpu_s,
        "peak_mb": peak,
        "threads": torch.get_num_threads(),
        "texts": len(texts),
        "max_lengths": [model.max_length for model in models],
    }


def _loader(spec: RunSpec, options: Any):
    if spec.runtime == "onnx":
        import onnxruntime  # noqa: F401  (before the baseline)

        from hm3.export.runtime import load_onnx

        return lambda path: load_onnx(path, options=options, threads=spec.threads)
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    from hm3.model.classifier import load

    for path in spec.models:  # import the model code before the clock starts, as for onnx
        check_model_type(path)
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as exc:
            detail = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise Hm3Error(
                f"{path}/config.json: transformers cannot read it ({detail}); save the model "
                "again with save_pretrained"
            ) from None
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    return lambda path: load(path, options=options)


def check_model_type(path: str | Path, label: str | None = None) -> None:
    """:func:`hm3.model.classifier.check_model_type` of a model directory's ``config.json``,
    named by ``label`` (the option that gave it)."""
    from hm3.io.checkpoint import read_config
    from hm3.model.classifier import check_model_type as check

    label = label or str(path)
    check(read_config(Path(path), label), f"{label}: config.json")


def spawn(spec: RunSpec, threads: int | None) -> dict[str, Any]:
    """Run ``spec`` in a fresh worker process (the parent's side of this protocol): its JSON
    line; a user error it reports is raised as that :class:`Hm3Error`, one line.

    Raises:
        Hm3Error: the worker's user error (exit 2).
        RuntimeError: the worker crashed (its stderr's last lines).
    """
    import subprocess

    env = dict(os.environ)
    env[_CLI_ENV] = "1" if spelling_for_cli() else ""  # its messages spelt as ours are
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(
        [sys.executable, "-m", "hm3.bench.worker"],
        input=json.dumps(asdict(spec)),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    last = (done.stdout.strip().splitlines() or ["{}"])[-1]
    if done.returncode == 2:  # a user error: its one line, as JSON on stdout's last line
        error = json.loads(last).get("error") if last.startswith('{"error"') else None
        raise Hm3Error(error or (done.stderr.strip().splitlines() or ["a run failed"])[-1])
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"bench worker failed (exit {done.returncode}):\n{tail}")
    return json.loads(last)


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def main() -> None:
    try:
        with cli_spelling() if os.environ.get(_CLI_ENV) else contextlib.nullcontext():
            result = run(RunSpec(**json.loads(sys.stdin.read())))
    except Hm3Error as exc:
        print(str(exc), file=sys.stderr)
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
