"""``hm3.demo.train.classifier``: fine-tune a tiny random BERT on a separable toy task (no network).

The base is tiny's shared random ``BertModel`` (2 layers, hidden 32, 100-token WordPiece). The
task: a text's label is whether it draws its sentiment words from the "good" or the "bad"
group, mixed with filler words. Checked: a loadable classifier with the given labels that learns
the task, the cache (reuse, what changes the key, what does not), bit-identical weights from two
runs with one seed, atomic output, the caller's RNG and threads left alone, and bad input.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hm3.demo.train.classifier as train_module
import hm3.demo.train.loop as train_loop
from hm3.demo.train.classifier import TrainedClassifier, train_classifier
from hm3.demo.train.loop import TrainSettings
from hm3.demo.train.loop import batches as make_batches
from hm3.errors import Hm3Error
from hm3.model.classifier import load
from tiny import make_base

LABELS = ("negative", "positive")
GOOD = ("good", "great", "happy", "love", "nice", "fine")
BAD = ("bad", "awful", "sad", "hate", "terrible")
FILLER = ("the", "a", "is", "of", "to", "and", "in", "it", "you", "that", "he", "was", "for", "on")
FAST = TrainSettings(
    epochs=4,
    batch_size=16,
    max_length=16,
    learning_rate=2e-3,
    warmup_ratio=0.1,
    max_train_examples=None,
    max_validation_examples=None,
    threads=1,
)


def toy_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.choices((BAD, GOOD)[label], k=rng.randint(1, 3))
        words += rng.choices(FILLER, k=rng.randint(0, 8))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": LABELS[label]})
    return rows


def make_tiny_base(path: Path) -> Path:
    """tiny's random BERT, its toy words checked to be in the vocabulary."""
    base = make_base(path, "bert")
    ids = AutoTokenizer.from_pretrained(base)(" ".join(GOOD + BAD + FILLER))["input_ids"]
    assert 1 not in ids, "toy words must not be [UNK]"
    return base


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-train")
    base = make_tiny_base(root / "base")
    train = write_jsonl(root / "train.jsonl", toy_rows(192, seed=1))
    validation = write_jsonl(root / "validation.jsonl", toy_rows(64, seed=2))
    test = toy_rows(64, seed=3)
    return root, base, train, validation, test


@pytest.fixture(scope="module")
def trained(setup) -> TrainedClassifier:
    root, base, train, validation, _ = setup
    return train_classifier(
        base, "sentiment", LABELS, train, validation, root / "zoo", FAST, progress=False
    )


def run(setup, out: Path, settings: TrainSettings = FAST, **changes) -> TrainedClassifier:
    _, base, train, validation, _ = setup
    args = dict(
        base_dir=base,
        task="sentiment",
        labels=LABELS,
        train_file=train,
        validation_file=validation,
        out_root=out,
        settings=settings,
    )
    args.update(changes)
    return train_classifier(**args, progress=False)


def test_trained_classifier_loads_with_the_labels_and_learns_the_task(setup, trained):
    root, *_, test = setup
    assert trained.path.parent == root / "zoo" and trained.path.name.startswith("sentiment-")
    assert not trained.reused and trained.labels == LABELS and trained.train_seconds > 0
    assert (trained.path / "model.safetensors").is_file()
    assert (trained.path / "tokenizer.json").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(trained.path)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {name: i for i, name in enumerate(LABELS)}
    assert trained.validation_macro_f1 >= 0.9
    predictions = load(trained.path, device="cpu").predict([r["text"] for r in test])
    task = trained.path.name  # an ordinary classifier's task is named after its directory
    hits = sum(p.tasks[task].label == r["label"] for p, r in zip(predictions, test, strict=True))
    accuracy = hits / len(test)
    assert accuracy >= 0.9  # chance is 0.5


def test_training_json_records_the_run(trained):
    report = json.loads((trained.path / "training.json").read_text(encoding="utf-8"))
    assert report["validation_macro_f1"] == trained.validation_macro_f1
    assert report["settings"]["seed"] == 0 and report["labels"] == list(LABELS)
    assert len(report["train_sha256"]) == 64 and len(report["base_sha256"]) == 64
    assert report["train_rows"] == 192 and report["steps"] == 4 * 12
    assert set(report["versions"]) == {"torch", "transformers", "python"}


def test_same_inputs_reuse_the_directory_without_training(setup, trained, monkeypatch):
    monkeypatch.setattr(train_module, "run", lambda *a, **k: pytest.fail("trained again"))
    again = run(setup, setup[0] / "zoo")
    assert again.reused and again.path == trained.path
    assert again.validation_macro_f1 == trained.validation_macro_f1
    assert again.train_seconds == trained.train_seconds
    # threads is not part of the key: it changes speed, not what is learned
    assert run(setup, setup[0] / "zoo", replace(FAST, threads=2)).path == trained.path
    assert [p.name for p in (setup[0] / "zoo").iterdir()] == [trained.path.name]


def test_seed_settings_labels_and_data_are_part_of_the_key(setup, trained):
    root, base, train, validation, _ = setup
    keys = {trained.path.name}
    for changes in (
        {"settings": replace(FAST, seed=1)},
        {"settings": replace(FAST, learning_rate=1e-3)},
        {"labels": LABELS[::-1]},
        {"train_file": write_jsonl(root / "train2.jsonl", toy_rows(192, seed=4))},
    ):
        digest, _ = train_module._fingerprint(
            base,
            train_module._weight_files(base),
            tuple(changes.get("labels", LABELS)),
            changes.get("train_file", train),
            validation,
            changes.get("settings", FAST),
        )
        keys.add(f"sentiment-{digest[:16]}")
    assert len(keys) == 5


def test_other_seed_trains_into_another_directory(setup, trained, tmp_path):
    other = run(setup, setup[0] / "zoo", replace(FAST, seed=1, epochs=1))
    assert other.path != trained.path and not other.reused


def test_same_seed_gives_identical_weights(setup, tmp_path):
    settings = replace(FAST, epochs=1)
    first, second = run(setup, tmp_path / "a", settings), run(setup, tmp_path / "b", settings)
    assert first.path.name == second.path.name and not second.reused
    a, b = load_file(first.path / "model.safetensors"), load_file(second.path / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_callers_rng_and_threads_are_left_alone(setup, tmp_path):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    run(setup, tmp_path, replace(FAST, epochs=1, threads=1 if threads > 1 else 2))
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def test_a_failed_run_leaves_nothing_behind(setup, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(train_loop, "_fit", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        run(setup, tmp_path / "zoo", replace(FAST, epochs=1))
    assert list((tmp_path / "zoo").iterdir()) == []


def test_max_train_examples_takes_a_label_balanced_sample(setup, tmp_path):
    rows = [r for r in toy_rows(400, seed=5) if r["label"] == "positive"][:90]
    rows += [r for r in toy_rows(400, seed=6) if r["label"] == "negative"][:10]
    train = write_jsonl(tmp_path / "skewed.jsonl", rows)
    settings = replace(FAST, epochs=1, max_train_examples=40)
    result = run(setup, tmp_path / "zoo", settings, train_file=train)
    report = json.loads((result.path / "training.json").read_text(encoding="utf-8"))
    assert report["train_rows_per_label"] == {"negative": 10, "positive": 30}


def test_batches_cover_every_row_once_and_group_similar_lengths():
    lengths = [random.Random(i).randint(3, 60) for i in range(500)]
    batches = make_batches(lengths, 32, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) <= 32 for b in batches)
    assert batches == make_batches(lengths, 32, torch.Generator().manual_seed(0))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shuffled = torch.randperm(500, generator=torch.Generator().manual_seed(0)).tolist()
    plain = [shuffled[s : s + 32] for s in range(0, 500, 32)]
    naive = sum(len(c) * max(lengths[i] for i in c) for c in plain)
    assert padded < 0.8 * naive


def base_without_weights(root: Path, base: Path, *, pickled: bool = False) -> Path:
    bad = root / ("pickled" if pickled else "no-weights")
    shutil.copytree(base, bad, dirs_exist_ok=True)
    (bad / "model.safetensors").unlink()
    if pickled:
        (bad / "pytorch_model.bin").write_bytes(b"not loaded")
    return bad


def test_an_incomplete_directory_is_trained_again(setup, tmp_path):
    first = run(setup, tmp_path, replace(FAST, epochs=1))
    (first.path / "training.json").unlink()  # e.g. removed by hand
    again = run(setup, tmp_path, replace(FAST, epochs=1))
    assert again.path == first.path and not again.reused
    assert (again.path / "training.json").is_file()


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing_train", r"train file .*nope\.jsonl: file not found; build the demo data"),
        ("empty_train", r"train file .*empty\.jsonl: no rows"),
        ("unknown_label", r"unknown\.jsonl: row 2 has label 'neutral', which is not one of \['neg"),
        ("label_without_rows", r"label 'positive' of task 'sentiment' has no training rows"),
        ("bad_json", r"train file .*bad\.jsonl: row 1 is not \{\"text\": str, \"label\": str\}"),
        ("no_weights", r"no-weights: no model\.safetensors; fetch"),
        ("pickled", r"pickled: no model\.safetensors \(pickled weights are refused\)"),
        ("not_utf8", r"validation file .*latin\.jsonl: line 1 is not UTF-8"),
        ("bad_task", r"task 'a/b': expected letters, digits"),
        ("one_label", r"expected two or more distinct"),
        ("long_max_length", r"max_length=512: the base .* takes at most 64 tokens"),
    ],
)
def test_bad_input_names_the_culprit(setup, tmp_path, case, match):
    base = setup[1]
    rows = toy_rows(8, seed=7)
    changes = {
        "missing_train": {"train_file": tmp_path / "nope.jsonl"},
        "empty_train": {"train_file": write_jsonl(tmp_path / "empty.jsonl", [])},
        "unknown_label": {
            "validation_file": write_jsonl(
                tmp_path / "unknown.jsonl", [rows[0], {"text": "meh", "label": "neutral"}]
            )
        },
        "label_without_rows": {
            "train_file": write_jsonl(
                tmp_path / "neg.jsonl", [{**r, "label": "negative"} for r in rows]
            )
        },
        "bad_json": {"train_file": tmp_path / "bad.jsonl"},
        "no_weights": {"base_dir": base_without_weights(tmp_path, base)},
        "pickled": {"base_dir": base_without_weights(tmp_path, base, pickled=True)},
        "not_utf8": {"validation_file": tmp_path / "latin.jsonl"},
        "bad_task": {"task": "a/b"},
        "one_label": {"labels": ("negative", "negative")},
        "long_max_length": {"settings": replace(FAST, max_length=512)},
    }[case]
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9", "label": "positive"}\n')
    with pytest.raises(Hm3Error, match=match):
        run(setup, tmp_path / "zoo", **changes)
    assert not (tmp_path / "zoo").exists() or list((tmp_path / "zoo").iterdir()) == []


@pytest.mark.parametrize(
    "field",
    ["epochs", "batch_size", "learning_rate", "warmup_ratio", "threads", "max_train_examples"],
)
def test_settings_out_of_range_are_refused(field):
    value = {"warmup_ratio": 1.0}.get(field, 0)
    with pytest.raises(Hm3Error, match=f"TrainSettings.{field}={value!r}"):
        TrainSettings(**{field: value})
