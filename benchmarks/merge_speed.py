"""Benchmark: ``hm3 merge`` vs ``mergekit-yaml`` (mergekit 0.1.5) on the same HM3 merge.

What it does: builds random-initialised BERT checkpoints with ``save_pretrained``
(safetensors) — a bare ``BertModel`` base and N ``BertForSequenceClassification`` fine-tunes
with 2, 3, 4, 2 ... labels and perturbed bodies, sharing a WordPiece tokenizer — for a
MiniLM-sized and a BERT-base-sized model; writes their HM3 expansion with
:func:`hm3.merging.expanded.expand` (zero-padded heads, zero-head base, ``mergekit.yaml``); then
merges with ``ties`` (density 0.5) in both tools, each run as a fresh subprocess, interleaved
A B B A ... over ``--repeats`` rounds. It prints the median wall time and peak RSS of each
tool, their ratios, the import/startup share, and the largest difference between the two
merged models (a benchmark of tools that compute different things would be worthless).
It is not a test: it asserts nothing, and the numbers depend on the machine.

Which inputs each tool reads:

* ``mergekit-yaml <expanded>/mergekit.yaml OUT`` reads the expanded models and zero-head base.
* ``hm3 merge`` reads the original models and base. Pointing it at the expanded models is not
  the same merge: hm3 would treat each padded K-row head as a K-label task and expand it again
  to N·K labels. The originals are the same work: every body tensor holds the same float32
  bytes in both (``expand`` copies them), the original files are the same size but for
  the heads (a few KB smaller), and hm3 pads those heads in memory, which costs microseconds.
  Reading the originals is what an hm3 user does, so it is also the honest comparison.

Fair options: both tools run on the CPU with torch's default thread count, write float32
safetensors in one file, copy the tokenizer and write a model card (both defaults).
``mergekit-yaml`` gets ``--quiet`` and ``hm3 merge`` ``--no-progress``; mergekit's
``--lazy-unpickle`` only matters for pickled inputs and is left off; no ``--cuda``,
``--async-write`` or ``--low-cpu-memory``. Each child runs its tool's console-script entry
point in-process under a tiny wrapper that imports torch (both tools need it), loads the entry
point, then reports the time spent in the tool, its CPU time and its own peak RSS (``VmHWM``:
``ru_maxrss`` would not do, Linux carries the parent's peak into a child over fork and exec).
Wall time is measured by the parent around the whole child; "startup" is wall minus the time
in the tool (interpreter, torch and the entry module's imports).

Agreement: the two merged models are compared tensor by tensor (:func:`agreement`); entries
where mergekit's unstable ``argsort`` and hm3's by-position rule keep different members of an
exact tie at the trim threshold are counted and excused (each is checked against the
HM3-expanded inputs), every other entry must agree within 1e-5. Results:
``docs/results/merge-speed.md``.

Usage::

    python benchmarks/merge_speed.py                      # both sizes, 2 and 4 models
    python benchmarks/merge_speed.py --sizes minilm --models 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _common import comma_list, markdown_table, new_parser, print_record, run_record
from safetensors import safe_open

SIZES = {  # name: (layers, hidden, heads, intermediate); vocabulary 30522, 512 positions
    "minilm": (6, 384, 12, 1536),
    "bert-base": (12, 768, 12, 3072),
}
VOCAB_SIZE = 30522
LABEL_COUNTS = (2, 3, 4, 2, 3, 4)
DENSITY = 0.5
TOLERANCE = 1e-5

# Runs one console-script entry point in this process and reports what it cost. torch, which
# both tools import first thing, is imported before the clock starts on the tool itself, so
# "startup" (interpreter, torch, the tool's entry module) is comparable between the tools.
# Peak RSS is the process's own high-water mark (VmHWM): ru_maxrss would not do, since Linux
# carries the parent's peak over fork and exec into the child's.
CHILD = """
import json, resource, sys, time
def hwm_kb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
import torch
from importlib.metadata import entry_points
main = next(e for e in entry_points(group="console_scripts") if e.name == sys.argv[2]).load()
started_rss = hwm_kb()
t1 = time.perf_counter()
report, sys.argv = sys.argv[1], sys.argv[2:]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
run_s = time.perf_counter() - t1
usage = resource.getrusage(resource.RUSAGE_SELF)
with open(report, "w") as fh:
    json.dump({"run_s": run_s, "cpu_s": usage.ru_utime + usage.ru_stime, "code": code,
               "rss_kb": hwm_kb(), "started_rss_kb": started_rss}, fh)
"""


@dataclass(frozen=True)
class Run:
    """One child process: wall, startup and CPU seconds; peak RSS and RSS after start (MiB)."""

    wall: float
    startup: float
    cpu: float
    rss_mib: float
    started_rss_mib: float


# -- building the inputs -------------------------------------------------------------------
def write_tokenizer(path: Path) -> None:
    """A WordPiece tokenizer with the model's full vocabulary size (tokens are placeholders)."""
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + [f"tok{i}" for i in range(VOCAB_SIZE - len(special))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5: `vocab_file=` silently gives an empty vocabulary; pass the dict
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(path)


def build_zoo(root: Path, size: str, n_models: int, seed: int = 0) -> Path:
    """Base + ``n_models`` classifiers of one size under ``root``; returns the hm3 config."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    layers, hidden, heads, inter = SIZES[size]
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
    )
    torch.manual_seed(seed)
    base = BertModel(config)
    base.save_pretrained(root / "base")
    write_tokenizer(root / "base")
    clf = BertForSequenceClassification(config)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    del base
    models = []
    for i in range(n_models):
        k = LABEL_COUNTS[i % len(LABEL_COUNTS)]
        clf.config.num_labels = k
        clf.config.id2label = {j: f"t{i}_l{j}" for j in range(k)}
        clf.config.label2id = {v: j for j, v in clf.config.id2label.items()}
        clf.classifier = torch.nn.Linear(hidden, k)
        with torch.no_grad():  # a "fine-tune": the base's body plus noise
            for name, param in clf.bert.state_dict().items():
                if param.is_floating_point():
                    param.copy_(base_state[name] + 0.02 * torch.randn_like(param))
        path = root / f"task{i}"
        clf.save_pretrained(path)
        write_tokenizer(path)
        models.append({"model": str(path)})
    doc = {
        "base_model": str(root / "base"),
        "merge_method": "ties",
        "parameters": {"density": DENSITY},
        "models": models,
        "dtype": "float32",
    }
    (root / "hm3.yaml").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return root / "hm3.yaml"


def expand_zoo(config_file: Path, out: Path) -> Path:
    """``hm3 expand``: the HM3-expanded inputs; returns the ``mergekit.yaml`` written."""
    from hm3.merging.config import MergeConfig
    from hm3.merging.expanded import expand

    expand(MergeConfig.from_yaml(config_file), out, progress=False)
    return out / "mergekit.yaml"


# -- do the two merges agree? ----------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """Largest |hm3 − mergekit| off trim ties, entries on ties, names compared / unmatched."""

    max_diff: float
    tied_entries: int
    compared: list[str]
    unmatched: list[str]

    def ok(self, tolerance: float) -> bool:
        return self.max_diff <= tolerance and not self.unmatched and bool(self.compared)


def agreement(a_dir: Path, b_dir: Path, expanded: Path, density: float, tol: float) -> Agreement:
    """Compare the merged models in ``a_dir`` and ``b_dir`` (``ties`` at ``density``).

    Args:
        a_dir, b_dir: the two output directories (``*.safetensors``, any sharding).
        expanded: ``hm3 expand``'s output (``base/``, ``models/<task>/``), to explain ties.
        density: the TIES density both merges used.
        tol: differences up to this are agreement.

    Returns:
        An :class:`Agreement`.
    """
    a_files, b_files = _index(a_dir), _index(b_dir)
    shared = sorted(a_files.keys() & b_files.keys())
    worst, tied = 0.0, 0
    for name in shared:
        a, b = _tensor(a_files[name], name).double(), _tensor(b_files[name], name).double()
        if a.shape != b.shape:
            return Agreement(float("inf"), 0, shared, [f"{name}: shapes differ"])
        diff = (a - b).abs()
        far = diff > tol
        if bool(far.any()):
            excused = far & _on_trim_ties(expanded, name, density)
            tied += int(excused.sum())
            diff[excused] = 0.0
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return Agreement(worst, tied, shared, sorted(a_files.keys() ^ b_files.keys()))


def _index(path: Path) -> dict[str, Path]:
    names = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, "pt") as fh:
            names.update(dict.fromkeys(fh.keys(), file))
    return names


def _tensor(file: Path, name: str) -> torch.Tensor:
    with safe_open(file, "pt") as fh:
        return fh.get_tensor(name)


def _on_trim_ties(expanded: Path, name: str, density: float) -> torch.Tensor:
    """Where some model's |τ| equals its trim threshold and more than one entry has it."""
    base = _tensor(expanded / "base" / "model.safetensors", name)
    tied = torch.zeros(base.shape, dtype=torch.bool)
    for model in sorted((expanded / "models").iterdir()):  # τ in float32, as both tools have it
        tau = (_tensor(model / "model.safetensors", name) - base).abs()
        k = max(1, int(density * tau.numel()))
        threshold = torch.topk(tau.reshape(-1), k).values.min()
        on_threshold = tau == threshold
        if int(on_threshold.sum()) > 1:
            tied |= on_threshold
    return tied


# -- running the tools ---------------------------------------------------------------------
def run_tool(argv: list[str], out: Path, env: dict[str, str]) -> Run:
    """Run console script ``argv[0]`` with ``argv[1:]`` in a fresh process with environment
    ``env``; ``out`` is removed first. Raises if the tool fails."""
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        report = Path(fh.name)
    try:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(report), *argv],
            capture_output=True,
            text=True,
            env=env,
        )
        wall = time.perf_counter() - started
        result = json.loads(report.read_text() or "{}")
    finally:
        report.unlink(missing_ok=True)
    if proc.returncode or result.get("code"):
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return Run(
        wall,
        wall - result["run_s"],
        result["cpu_s"],
        result["rss_kb"] / 1024,
        result["started_rss_kb"] / 1024,
    )


def commands(config: Path, mergekit_yaml: Path, out: Path) -> dict[str, list[str]]:
    """The two tools' command lines, writing to ``out/hm3`` and ``out/mergekit``."""
    return {
        "hm3": ["hm3", "merge", str(config), "--out", str(out / "hm3"), "--no-progress"],
        "mergekit": ["mergekit-yaml", str(mergekit_yaml), str(out / "mergekit"), "--quiet"],
    }


def interleaved(
    cmds: dict[str, list[str]], out: Path, repeats: int, env: dict[str, str]
) -> dict[str, list[Run]]:
    """Run the tools A B, B A, A B ... ``repeats`` rounds; every tool's runs, in order."""
    runs: dict[str, list[Run]] = {name: [] for name in cmds}
    order = list(cmds)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            runs[name].append(run_tool(cmds[name], out / name, env))
            print(f"    {name:8s} round {r + 1}: {runs[name][-1].wall:6.2f} s", flush=True)
    return runs


# -- reporting -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    size: str
    models: int
    hm3: list[Run]
    mergekit: list[Run]
    agreement: Agreement


def _median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


HEADER = (
    "size",
    "models",
    "hm3 wall s",
    "mergekit wall s",
    "speed-up",
    "speed-up w/o startup",
    "hm3 peak RSS MiB",
    "mergekit peak RSS MiB",
    "memory ratio",
    "startup s hm3 / mk",
    "RSS after startup MiB hm3 / mk",
    "CPU s hm3 / mk",
    "max abs diff (tied entries)",
)


def table(rows: list[Row]) -> str:
    """A markdown table of medians; speed-up = mergekit / hm3, memory ratio = hm3 / mergekit."""
    cells = []
    for r in rows:
        h = {f: _median(r.hm3, f) for f in Run.__dataclass_fields__}
        m = {f: _median(r.mergekit, f) for f in Run.__dataclass_fields__}
        run_ratio = (m["wall"] - m["startup"]) / (h["wall"] - h["startup"])
        a = r.agreement
        cells.append([
            r.size, str(r.models), f"{h['wall']:.2f}", f"{m['wall']:.2f}",
            f"{m['wall'] / h['wall']:.2f}×", f"{run_ratio:.2f}×", f"{h['rss_mib']:.0f}",
            f"{m['rss_mib']:.0f}", f"{h['rss_mib'] / m['rss_mib']:.2f}×",
            f"{h['startup']:.2f} / {m['startup']:.2f}",
            f"{h['started_rss_mib']:.0f} / {m['started_rss_mib']:.0f}",
            f"{h['cpu']:.1f} / {m['cpu']:.1f}", f"{a.max_diff:.1e} ({a.tied_entries})",
        ])  # fmt: skip
    return markdown_table(HEADER, cells)


def child_env(threads: int | None) -> dict[str, str]:
    """The tools' environment: ours, with the thread count pinned when ``threads`` is given."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def bench_one(work: Path, size: str, n: int, repeats: int, threads: int | None) -> Row:
    """Build, expand and merge one (size, model count) case; the row of its results."""
    case = work / f"{size}-{n}"
    config, mergekit_yaml = case / "inputs" / "hm3.yaml", case / "expanded" / "mergekit.yaml"
    if config.is_file() and mergekit_yaml.is_file():
        print(f"{size}, {n} models: reusing the checkpoints in {case}", flush=True)
    else:
        print(f"{size}, {n} models: building checkpoints in {case}", flush=True)
        shutil.rmtree(case, ignore_errors=True)
        config = build_zoo(case / "inputs", size, n)
        mergekit_yaml = expand_zoo(config, case / "expanded")
    cmds = commands(config, mergekit_yaml, case / "out")
    runs = interleaved(cmds, case / "out", repeats, child_env(threads))
    out = case / "out"
    agree = agreement(out / "hm3", out / "mergekit", case / "expanded", DENSITY, TOLERANCE)
    print(
        f"    {len(agree.compared)} tensors compared, max abs diff {agree.max_diff:.1e} off "
        f"{agree.tied_entries} entries tied at a trim threshold; unmatched: {agree.unmatched}",
        flush=True,
    )
    return Row(size, n, runs["hm3"], runs["mergekit"], agree)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = new_parser(__doc__)
    parser.add_argument("--sizes", default="minilm,bert-base", help=f"comma list of {list(SIZES)}")
    parser.add_argument("--models", default="2,4", help="comma list of model counts")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per tool (median taken)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where to build (default: a temp dir); inputs a --keep run left there are reused",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="set OMP_NUM_THREADS/MKL_NUM_THREADS for both tools (default: their own defaults)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the built files")
    args = parser.parse_args(argv)
    args.sizes = comma_list(args.sizes)
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")
    args.models = [int(m) for m in comma_list(args.models)]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_record(run_record("merge_speed.py", argv))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hm3-merge-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in args.sizes:
            for n in args.models:
                rows.append(bench_one(work, size, n, args.repeats, args.threads))
                if not args.keep:
                    shutil.rmtree(work / f"{size}-{n}", ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nties, density {DENSITY}, float32, CPU ({os.cpu_count()} cores), "
        f"threads: {args.threads or 'tool defaults'}, "
        f"median of {args.repeats} interleaved runs\n\n{table(rows)}\n"
    )
    bad = [(r.size, r.models) for r in rows if not r.agreement.ok(TOLERANCE)]
    print(f"OUTPUTS DIFFER: {bad}" if bad else "outputs agree (<= 1e-5 off trim-threshold ties)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
