"""How many decisions int8 keeps: `hm3 export onnx --quantize int8` on the demo's four-task merge.

Builds the demo's all-four-task DARE-TIES merge from the cached zoo (as `hm3 demo` does),
exports it to ONNX in float32 (checked against torch by the export itself), then quantizes the
float graph with each setting below and prints, per task, the share of texts whose decision (the
most probable label) int8 keeps, the texts it changes and the largest probability difference.
The comparison is the export's own (`hm3.export.quantize.agreement`: file-order batches of 32).

Settings: `per-tensor` (ONNX Runtime's default scales), `per-channel`,
`per-channel+reduce-range` (7-bit weights), and `smoothed` (hm3's default: per-channel, after
smoothing a copy of the model on the unlabeled texts at each token limit, as
`hm3 export onnx --quantize int8 --texts unlabeled.jsonl --max-length N` does). In all of them the
embeddings and the head stay float32.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import add_cache, comma_list, demo_max_length, new_parser, print_record, run_record

SETTINGS = {
    "per-tensor": dict(per_channel=False, reduce_range=False),
    "per-channel": dict(per_channel=True, reduce_range=False),
    "per-channel+reduce-range": dict(per_channel=True, reduce_range=True),
    "smoothed": dict(per_channel=True, reduce_range=False),
}


def merged_all4(cache: Path | None, out: Path, method: str) -> Path:
    """The demo's all4 merge of ``method`` (its fixed parameters and seed 0)."""
    from hm3.demo.cases import CASES, merge_config, method_specs, train_zoo
    from hm3.demo.data.prepare import prepare_data
    from hm3.demo.sources.fetch import base_model_dir
    from hm3.recipe import merge

    base = base_model_dir(cache)
    zoo = train_zoo(base, prepare_data(cache, seed=0), cache, progress=False)
    case = next(c for c in CASES if c.name == "all4")
    config = merge_config(case, method_specs((method,))[0], base, zoo, seed=0)
    return merge(config, out, progress=False).path


def text_sets(cache: Path | None, names: list[str], tmp: Path) -> dict[str, Path]:
    """``unlabeled``: the demo's alignment texts; ``test``: its four test splits, one file."""
    import json

    from hm3.demo.data.prepare import TASKS, prepare_data

    data = prepare_data(cache, seed=0)
    out = {}
    if "unlabeled" in names:
        out["unlabeled"] = data.unlabeled
    if "test" in names:
        path = tmp / "test.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for task in TASKS:
                for line in data.tasks[task].test.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        f.write(json.dumps({"text": json.loads(line)["text"]}) + "\n")
        out["test"] = path
    return out


def smoothed_graph(
    cache: Path | None, model: Path, float_dir: Path, length: int, folder: Path
) -> Path:
    """The float graph of ``model`` smoothed on the demo's unlabeled texts at ``length`` tokens."""
    from hm3.export.runtime import MODEL_FILE
    from hm3.export.smooth import smooth_graph
    from hm3.io.texts import iter_text_batches, open_texts
    from hm3.model.classifier import load
    from hm3.options import RunOptions

    clf = load(model, options=RunOptions(device="cpu", max_length=length))
    texts = open_texts(text_sets(cache, ["unlabeled"], folder.parent)["unlabeled"])
    folder.mkdir()
    batches = iter_text_batches(texts, 32)
    written, done = smooth_graph(
        clf, batches, float_dir / MODEL_FILE, folder / MODEL_FILE, batch_size=32
    )
    print(f"smoothing at {length} tokens: {done.record()}", file=sys.stderr, flush=True)
    return written or float_dir / MODEL_FILE


def main() -> None:
    parser = new_parser(__doc__)
    add_cache(parser)
    parser.add_argument("--method", default="dare_ties", help="the demo merge (default dare_ties)")
    parser.add_argument(
        "--max-lengths",
        type=comma_list,
        default=[str(demo_max_length()), "512"],
        help="token limits to compare at (default: the demo's, and 512)",
    )
    parser.add_argument("--texts", type=comma_list, default=["unlabeled", "test"])
    parser.add_argument("--settings", type=comma_list, default=list(SETTINGS))
    args = parser.parse_args()
    print_record(run_record("export_agreement.py"))

    from hm3.export.api import export_onnx
    from hm3.export.quantize import agreement, quantize_int8
    from hm3.export.runtime import MODEL_FILE, load_onnx
    from hm3.io.texts import open_texts
    from hm3.options import RunOptions

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = merged_all4(args.cache, tmp / "merged", args.method)
        float_dir = export_onnx(model, tmp / "fp32", options=RunOptions(progress=False)).path
        sets = text_sets(args.cache, args.texts, tmp)
        rows = []
        for setting in args.settings:
            for length in map(int, args.max_lengths):
                int8_dir = tmp / f"{setting}-{length}"
                int8_dir.mkdir()
                for file in float_dir.iterdir():
                    if file.name != MODEL_FILE:
                        (int8_dir / file.name).write_bytes(file.read_bytes())
                source = float_dir / MODEL_FILE
                if setting == "smoothed":
                    smooth_dir = tmp / f"smooth-{length}"
                    source = smoothed_graph(args.cache, model, float_dir, length, smooth_dir)
                quantize_int8(source, int8_dir / MODEL_FILE, **SETTINGS[setting])
                run = RunOptions(max_length=length)
                ref, got = load_onnx(float_dir, options=run), load_onnx(int8_dir, options=run)
                for name, path in sets.items():
                    found = agreement(ref, got, open_texts(path), batch_size=32, progress=False)
                    cells = [
                        f"{t.agreement:.4f} ({t.changed}; {t.max_abs_diff:.2f})"
                        for t in found.tasks
                    ]
                    rows.append([setting, str(length), f"{name} ({found.texts})", *cells])
                    print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        tasks = [t.name for t in load_onnx(float_dir).tasks]
    head = ["int8 setting", "max tokens", "texts", *tasks]
    print("agreement with float32 per task (texts changed; max |Δp|)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
