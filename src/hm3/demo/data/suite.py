"""The demo's evaluation suites, benign control and unlabeled texts, built from the splits.

``suite.yaml`` follows the paper's test setup (Tables 3 and 6): one dataset per label, made of
that label's test rows and expected to get it, plus cross-checks of other tasks' heads:

- ``prompt_attack: benign`` on every toxicity, spam and sentiment dataset (the paper's jailbreak
  head must call hate speech benign): none of that text tries to subvert an LLM;
- ``toxicity: non_toxic`` on test rows of prompt_attack (benign and injection only), spam and
  sentiment that contain no lexicon word (``x_toxicity_on_<task>``); jailbreaks are left out as
  in the paper, whose "positive jailbreak examples often contain problematic language";
- the benign control (DoNotAnswer questions about private information and misinformation, no
  lexicon word): ``prompt_attack: benign, toxicity: non_toxic``.

Not cross-checked, because the right answer is undefined: spam on anything but e-mail (the
paper skips phishing on sentiment text), sentiment on anything but reviews and tweets.
``test_suite.yaml`` lists each task's own test file with per-row labels (each original's own
test-set macro-F1). The two suites are separate because the per-label datasets already hold the
test rows: one suite with both would count every test row twice in the pooled macro-F1.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hm3.demo.data.split import Row, rng
from hm3.demo.data.text import Lexicon

SUITE = "suite.yaml"
TEST_SUITE = "test_suite.yaml"
UNLABELED = "unlabeled.jsonl"
CONTROL = "benign_control.jsonl"
SUITE_DIR = "suite"
SUITE_LIMIT = 3000
# task -> expectations added to each of its per-label datasets
CROSS_EXPECT: dict[str, dict[str, str]] = {
    "toxicity": {"prompt_attack": "benign"},
    "spam": {"prompt_attack": "benign"},
    "sentiment": {"prompt_attack": "benign"},
}
# source task -> its labels whose clean test rows the toxicity head must call non_toxic
TOXICITY_CROSS: dict[str, tuple[str, ...] | None] = {
    "prompt_attack": ("benign", "injection"),
    "spam": None,
    "sentiment": None,
}
CONTROL_EXPECT = {"prompt_attack": "benign", "toxicity": "non_toxic"}


def write_jsonl(path: Path, rows: Iterable[Mapping[str, str]]) -> None:
    """UTF-8 JSON lines, keys in the given order, nothing machine-specific."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_extras(
    root: Path,
    splits: Mapping[str, Mapping[str, list[Row]]],
    labels: Mapping[str, Sequence[str]],
    control: Sequence[str],
    lexicon: Lexicon,
    sizes: Mapping[str, int],
    seed: int,
) -> dict[str, object]:
    """Write the suites, their datasets, the benign control and the unlabeled texts.

    Args:
        root: the data directory (suite paths are relative to it).
        splits: ``{task: {split: rows}}``; labels: ``{task: label names}``.
        control: candidate benign-control texts (already clean and lexicon-free).
        sizes: ``cross_check``, ``control`` and ``unlabeled`` (per task) row counts.

    Returns:
        For the manifest: ``datasets`` (name → path, rows, expect) of ``suite.yaml``.
    """
    datasets: list[dict] = []
    for task, names in labels.items():
        for label in names:
            texts = [r.text for r in splits[task]["test"] if r.label == label]
            datasets.append(
                _dataset(
                    root, f"{task}_{label}", texts, {task: label, **CROSS_EXPECT.get(task, {})}
                )
            )
    for task, keep in TOXICITY_CROSS.items():
        rows = [
            r
            for r in splits[task]["test"]
            if (keep is None or r.label in keep) and not lexicon.hits(r.text)
        ]
        texts = _sample(rows, sizes["cross_check"], seed, f"x_toxicity_on_{task}")
        datasets.append(_dataset(root, f"x_toxicity_on_{task}", texts, {"toxicity": "non_toxic"}))
    picked = _sample(
        [Row(t, "control", "donotanswer") for t in control], sizes["control"], seed, "control"
    )
    write_jsonl(root / CONTROL, ({"text": t} for t in picked))
    datasets.append(
        {
            "name": "benign_control",
            "path": CONTROL,
            "rows": len(picked),
            "expect": dict(CONTROL_EXPECT),
        }
    )
    (root / SUITE).write_text(_suite_yaml(datasets, seed), encoding="utf-8")
    (root / TEST_SUITE).write_text(_test_suite_yaml(labels), encoding="utf-8")
    unlabeled = []
    for task in labels:
        unlabeled += _sample(splits[task]["train"], sizes["unlabeled"], seed, f"unlabeled-{task}")
    rng(seed, "unlabeled").shuffle(unlabeled)
    write_jsonl(root / UNLABELED, ({"text": t} for t in unlabeled))
    return {"datasets": datasets, "unlabeled_rows": len(unlabeled)}


def _dataset(root: Path, name: str, texts: list[str], expect: dict[str, str]) -> dict:
    path = f"{SUITE_DIR}/{name}.jsonl"
    write_jsonl(root / path, ({"text": t} for t in texts))
    return {"name": name, "path": path, "rows": len(texts), "expect": expect}


def _sample(rows: Sequence[Row], k: int, seed: int, name: str) -> list[str]:
    """Up to ``k`` texts, seeded, with the labels taking turns (a stratified sample)."""
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)
    queues = []
    for label in sorted(by_label):
        queue = list(by_label[label])
        rng(seed, name, label).shuffle(queue)
        queues.append(queue)
    out: list[str] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i].text for q in queues if i < len(q))
    return out[:k]


def _flow(expect: Mapping[str, object]) -> str:
    def value(v: object) -> str:
        return f"{{column: {v['column']}}}" if isinstance(v, dict) else str(v)

    return "{" + ", ".join(f"{k}: {value(v)}" for k, v in expect.items()) + "}"


def _suite_yaml(datasets: list[dict], seed: int) -> str:
    lines = [
        "# hm3 demo evaluation suite (paper Tables 3 and 6): one dataset per label from each",
        "# task's test split, cross-checks of other tasks' heads, and a benign control.",
        "# Cross-checks: prompt_attack must call toxic/spam/sentiment text benign; toxicity must",
        "# call lexicon-free prompt_attack (not jailbreak: problematic language, as in the",
        "# paper), spam and sentiment text non_toxic. Spam and sentiment are not cross-checked:",
        "# their answer on other domains' text is undefined.",
        "datasets:",
    ]
    for d in datasets:
        lines += [
            f"  - name: {d['name']}",
            f"    path: {d['path']}",
            "    text: text",
            f"    expect: {_flow(d['expect'])}",
        ]
    lines += [f"limit: {SUITE_LIMIT}", f"seed: {seed}"]
    return "\n".join(lines) + "\n"


def _test_suite_yaml(labels: Mapping[str, Sequence[str]]) -> str:
    lines = [
        "# Each task's own test split with per-row labels (the originals' test macro-F1).",
        "datasets:",
    ]
    for task in labels:
        lines += [
            f"  - name: {task}_test",
            f"    path: {task}/test.jsonl",
            "    text: text",
            f"    expect: {_flow({task: {'column': 'label'}})}",
        ]
    return "\n".join(lines) + "\n"
