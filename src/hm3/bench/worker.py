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
``torch.cuda.max_memory_allocated``). A fresh process per run is what makes the peak honest:
nothing another run allocated is counted.

A user error exits 2 with its one line on stderr; anything else is a traceback and exit 1.
This module is started by :mod:`hm3.bench.api`; it parses no command line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from hm3.errors import Hm3Error


@dataclass(frozen=True)
class RunSpec:
    """What one worker runs. ``runtime``: ``torch`` or ``onnx``; ``options``: RunOptions fields."""

    models: list[str]
    runtime: str
    texts: str
    options: dict[str, Any]
    threads: int | None = None
    windows: dict[str, Any] | None = None


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


def run(spec: RunSpec) -> dict[str, float]:
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
    windows = Windows(**spec.windows) if spec.windows is not None else None
    extra = {"windows": windows} if windows is not None else {}
    base = rss_mb()
    start = time.perf_counter()
    models = [loader(path) for path in spec.models]
    _sync(cuda)
    load_s = time.perf_counter() - start
    # warm-up: a whole pass each. One batch is not enough: every new padded length costs once,
    # and that cost, paid once per process, was inside the merged model's one pass but spread
    # over the originals' N passes (about 4 % of a pass of MiniLM on 2 cores)
    for model in models:
        model.predict_proba(texts, options.batch_size, **extra)
    _sync(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start, cpu = time.perf_counter(), time.process_time()
    for model in models:
        model.predict_proba(texts, options.batch_size, **extra)
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
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(AutoConfig.from_pretrained(path))]
    return lambda path: load(path, options=options)


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def main() -> None:
    try:
        result = run(RunSpec(**json.loads(sys.stdin.read())))
    except Hm3Error as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
