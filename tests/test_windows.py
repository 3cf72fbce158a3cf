"""Texts of any length (hm3.model.windows, BasePredictor): windows, combination, default labels.

The detector is a tiny random BERT (64 positions) trained here for a few seconds on a toy task:
a text is ``unsafe`` when it contains the trigger word, else ``safe``. A 5,000-token text whose
only trigger is its last word must be flagged with windows and missed when truncated.
"""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

import hm3
from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.model.labels import Task
from hm3.model.windows import Windows, combine, content_step, default_labels, spans
from test_cli import expect_user_error
from trained_detector import train_detector, trigger_text

SENTIMENT = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def detector(tmp_path_factory, one_thread):
    """A tiny BERT that flags the trigger word anywhere in up to 62 tokens."""
    return train_detector(tmp_path_factory.mktemp("detector"))


def test_a_trigger_at_the_end_of_5000_tokens_is_caught(detector):
    clf = hm3.load(detector)
    task = detector.name
    text = trigger_text(random.Random(2), 4999, 4999)
    assert len(clf.tokenizer(text, add_special_tokens=False)["input_ids"]) == 5000
    assert clf.window_counts([text], Windows()) == [len(spans(5000, 62, 47))] == [107]
    harmless = trigger_text(random.Random(2), 4999)  # the same text without its trigger
    flagged = clf.predict([text, "hello world", harmless], windows=Windows())
    assert flagged[0].tasks[task].label == "unsafe"
    assert flagged[0].tasks[task].scores["unsafe"] > 0.9
    assert flagged[1].tasks[task].label == "safe"
    assert flagged[2].tasks[task].label == "safe"  # no window raised a false alarm
    assert clf.predict([text])[0].tasks[task].label == "safe"  # truncated: the trigger is cut off
    # mean: one alarming window in 106 is averaged away; that is why max is the default
    averaged = clf.predict([text], windows=Windows(combine="mean"))[0].tasks[task]
    assert averaged.label == "safe" and averaged.scores["unsafe"] < 0.1


def test_windows_cover_every_token(detector):
    clf = hm3.load(detector, max_length=16)  # 14 content tokens per window
    rng = random.Random(3)
    for n in (1, 13, 14, 15, 27, 28, 29, 100, 141):
        text = trigger_text(rng, n)
        full = clf.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(full) == n
        for stride in (1, 5, 13, 14, None):
            rows, owner = clf.encode_units([text], Windows(stride=stride))
            content, step = content_step(16, 2, stride)
            cut = spans(n, content, step)
            assert owner.tolist() == [0] * len(cut)
            seen = np.zeros(n, dtype=int)
            for ids, (lo, hi) in zip(rows["input_ids"], cut, strict=True):
                assert len(ids) <= 16 and ids[0] == clf.tokenizer.cls_token_id
                assert ids[1:-1] == full[lo:hi]
                seen[lo:hi] += 1
            assert seen.min() >= 1, (n, stride)
            assert cut[-1][1] == n and all(b[0] - a[0] == step for a, b in itertools.pairwise(cut))


def test_a_short_text_gets_exactly_the_one_window_answer(detector):
    clf = hm3.load(detector)
    texts = [trigger_text(random.Random(i), 5 + 9 * i, i if i % 2 else None) for i in range(7)]
    for batch_size in (1, 3, 32):
        plain = clf.predict_proba(texts, batch_size)
        for combine_rule in ("max", "mean"):
            windowed = clf.predict_proba(texts, batch_size, Windows(combine=combine_rule))
            np.testing.assert_array_equal(windowed[detector.name], plain[detector.name])
    assert clf.window_counts(texts, Windows()) == [1] * len(texts)


def test_long_and_short_texts_share_batches(detector):
    clf = hm3.load(detector)
    rng = random.Random(4)
    short = [trigger_text(rng, 10), trigger_text(rng, 20, 3)]
    long = trigger_text(rng, 300, 150)
    mixed = clf.predict_proba([short[0], long, short[1]], 4, Windows())[detector.name]
    alone = clf.predict_proba(short, 4)[detector.name]
    np.testing.assert_allclose(mixed[[0, 2]], alone, atol=1e-6)
    assert mixed[1].argmax() == 1  # the trigger in the middle of 300 tokens


def test_padding_is_the_tokenizers(detector):
    clf = hm3.load(detector)
    texts = ["hello", "good bad awful sad", "the a is of to and in it you that he was"]
    rows, _ = clf.encode_units(texts, None)
    ours = clf.pad(rows)
    theirs = clf.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, theirs[key])
        assert value.dtype == np.int64


def test_max_and_mean_combination():
    tasks = [Task("guard", ("benign", "jailbreak"), 0, 2), Task("topic", ("a", "b", "c"), 2, 5)]
    guard = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]], dtype=np.float32)
    topic = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4], [1, 0, 0]], np.float32)
    owner = np.array([0, 0, 0, 1])
    probs = {"guard": guard, "topic": topic}
    top = combine(probs, owner, 2, tasks, Windows())
    np.testing.assert_array_equal(top["guard"], guard[[2, 3]])  # most confident jailbreak
    np.testing.assert_array_equal(top["topic"], topic[[0, 3]])  # "a" is topic's default: c=0.7
    mean = combine(probs, owner, 2, tasks, Windows(combine="mean"))
    np.testing.assert_allclose(mean["guard"][0], [0.5, 0.5], atol=1e-7)
    np.testing.assert_array_equal(mean["guard"][1], guard[3])
    chosen = combine(probs, owner, 2, tasks, Windows(default_labels={"topic": "c"}))
    np.testing.assert_array_equal(chosen["topic"][0], topic[1])  # now "a"=0.5 is the alarm


def test_default_labels_are_inferred_or_given():
    tasks = [
        Task("prompt", ("jailbreak", "benign"), 0, 2),
        Task("spam", ("spam", "ham"), 2, 4),
        Task("tox", ("toxic", "Non-Toxic"), 4, 6),
        Task("topic", ("world", "sports"), 6, 8),
    ]
    assert default_labels(tasks) == {
        "prompt": "benign",
        "spam": "ham",
        "tox": "Non-Toxic",
        "topic": "world",  # no safe name: the first label
    }
    assert default_labels(tasks, {"topic": "sports"})["topic"] == "sports"
    with pytest.raises(Hm3Error, match="no task 'nope'"):
        default_labels(tasks, {"nope": "x"})
    with pytest.raises(Hm3Error, match="has no label 'x'; its labels are world, sports"):
        default_labels(tasks, {"topic": "x"})


def test_a_sentiment_task_defaults_to_neutral_not_its_first_safe_name(
    zoo_factory, tmp_path, capsys, monkeypatch
):
    """Safe names rank by SAFE_NAMES, not by the task's order: negative/neutral/positive
    (a sentiment classifier) means nothing found at neutral; negative/positive still at negative."""
    from tiny import make_classifier

    base = zoo_factory("bert").base
    sentiment = make_classifier(base, tmp_path / "sentiment", SENTIMENT, seed=3)
    assert default_labels(hm3.load(sentiment).tasks) == {"sentiment": "neutral"}
    two = [Task("detector", ("negative", "positive"), 0, 2)]
    assert default_labels(two) == {"detector": "negative"}
    code, _, err = _cli(
        capsys, monkeypatch, "predict", sentiment, " ".join(["good"] * 200), "--json"
    )
    assert code == 0 and "default labels: sentiment=neutral" in err


def test_bad_window_options_are_refused(detector):
    clf = hm3.load(detector, max_length=16)
    with pytest.raises(Hm3Error, match="stride=15: expected at most 14"):
        clf.predict(["hello"], windows=Windows(stride=15))
    with pytest.raises(Hm3Error, match="stride=0"):
        Windows(stride=0)
    with pytest.raises(Hm3Error, match="combine='median'"):
        Windows(combine="median")  # type: ignore[arg-type]
    for stride in ("10", 10.5, True):
        with pytest.raises(Hm3Error, match=f"^stride={stride!r}: expected a positive number"):
            Windows(stride=stride)  # type: ignore[arg-type]
    with pytest.raises(Hm3Error, match="default_labels: expected a dict of task -> label, got str"):
        Windows(default_labels="guard=benign")  # type: ignore[arg-type]
    with pytest.raises(Hm3Error, match="max_length=2: too small for windows"):
        hm3.load(detector, max_length=2).predict(["hello"], windows=Windows())


def _cli(capsys, monkeypatch, *argv):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_hm3_predict_scores_the_whole_text_unless_told_not_to(detector, capsys, monkeypatch):
    text = trigger_text(random.Random(5), 999, 999)
    task = detector.name
    code, out, err = _cli(capsys, monkeypatch, "predict", detector, text, "hello", "--json")
    assert code == 0, err
    assert [r["tasks"][task]["label"] for r in json.loads(out)["results"]] == ["unsafe", "safe"]
    windows = len(spans(1000, 62, 47))
    assert f"1 of 2 texts were longer than one window: scored in {windows} windows" in err
    assert f"default labels: {task}=safe" in err
    code, out, err = _cli(capsys, monkeypatch, "predict", detector, text, "--json", "--no-windows")
    assert json.loads(out)["results"][0]["tasks"][task]["label"] == "safe" and not err.strip()
    code, out, _ = _cli(
        capsys, monkeypatch, "predict", detector, text, "--json", "--combine", "mean"
    )
    assert json.loads(out)["results"][0]["tasks"][task]["label"] == "safe"
    code, out, err = _cli(
        capsys, monkeypatch, "predict", detector, text, "--default-label", f"{task}=unsafe"
    )
    assert code == 0 and f"default labels: {task}=unsafe" in err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--default-label", "nope=safe"], "--default-label nope=safe: the model has no task"),
        (["--default-label", "safe"], "--default-label safe: expected TASK=LABEL"),
        (["--default-label", "a=safe,b=ok"], "one TASK=LABEL each; repeat the option"),
        (["--default-label", "a=safe", "--default-label", "a=ok"], "task 'a' is given twice"),
        (["--no-windows", "--stride", "5"], "add --windows (or drop them)"),
        (["--stride", "99"], "--stride 99: expected at most 62"),
        (["--combine", "median"], "--combine median: expected one of max, mean"),
        (["--combine", "mean", "--default-label", "x=safe"], "apply to --combine max only"),
    ],
)
def test_hm3_predict_refuses_bad_window_options(detector, tmp_path, capsys, monkeypatch, argv,
                                                match):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a stray file written to the current directory would show
    expect_user_error(capsys, tmp_path, "predict", detector, "hello", *argv, match=match,
                      names=argv[-2], watch=(detector,))  # fmt: skip


def test_evaluate_truncates_by_default_and_scores_windows_when_asked(
    detector, tmp_path, capsys, monkeypatch
):
    from hm3.evaluation.run import evaluate
    from hm3.evaluation.suite import load_suite

    rng = random.Random(6)
    rows = [{"text": trigger_text(rng, 300, 300)} for _ in range(4)]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    suite = tmp_path / "suite.yaml"
    data = {"name": "long", "path": "long.jsonl", "expect": {"guard": "unsafe"}}
    suite.write_text(json.dumps({"datasets": [data]}), encoding="utf-8")

    def accuracy(**kwargs) -> list[float]:
        result = evaluate(
            load_suite(suite), {}, originals={"guard": detector}, progress=False, **kwargs
        )
        return [d.accuracy for d in result.models[0].tasks[0].datasets]

    assert accuracy() == [0.0]  # truncated: the triggers are cut off
    assert accuracy(windows=Windows()) == [1.0]
    assert accuracy(windows=Windows(default_labels={"guard": "unsafe"})) == [0.0]
    code, out, err = _cli(
        capsys, monkeypatch, "evaluate", suite, "--originals", f"guard={detector}", "--json",
        "--no-progress", "--windows", "--default-label", "guard=safe",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["models"][0]["tasks"][0]["datasets"][0]["accuracy"] == 1.0
    with pytest.raises(Hm3Error, match="no evaluated model answers task 'nope'"):
        accuracy(windows=Windows(default_labels={"nope": "safe"}))
    with pytest.raises(Hm3Error, match=r"\{'guard': 'x'\}: task 'guard' has no label 'x'"):
        accuracy(windows=Windows(default_labels={"guard": "x"}))
