"""``hm3 bench`` on tiny real models: the output's shape and its errors (never its timings).

The merged model is a real ``hm3.merge`` of the shared tiny zoo's three classifiers; every run
is a real worker process, so the test also covers the process protocol.
"""

from __future__ import annotations

import json

import pytest

from hm3.bench.api import BenchResult
from hm3.cli.app import main
from hm3.cli.bench import print_bench
from test_cli import expect_user_error
from tiny import toy_texts


@pytest.fixture(scope="module")
def setup(zoo_of, bert_ties_merged, tmp_path_factory):
    zoo, merged = zoo_of("bert"), bert_ties_merged  # the shared TIES merge of that zoo
    root = tmp_path_factory.mktemp("bench")
    texts = root / "texts.jsonl"
    rows = [{"text": t} for t in toy_texts(40, seed=1)] + [{"text": " ".join(["good"] * 200)}]
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    originals = [f"--originals={m.name}={m}" for m in zoo.models]
    return merged, originals, texts


def run(capsys, monkeypatch, *argv):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.mark.slow  # four worker processes: about 20 s on an idle machine, a minute on a busy one
def test_bench_json_has_the_issues_shape(setup, capsys, monkeypatch):
    merged, originals, texts = setup
    code, out, err = run(
        capsys, monkeypatch, "bench", "--merged", merged, *originals, "--texts", texts,
        "--repeats", "1", "--threads", "1", "--batch-size", "8", "--limit", "30", "--json",
        "--no-progress", "--windows", "--max-length", "32", "--dtype", "bfloat16",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    for system in ("originals", "merged"):
        assert set(result[system]) == {"load_s", "infer_s", "peak_mb", "infer_cpu_s"}
        assert result[system]["load_s"] > 0 and result[system]["infer_s"] > 0
        assert len(result["runs"][system]) == 1
    assert set(result["ratio"]) == {"load", "infer", "total", "memory", "infer_cpu"}
    assert all(isinstance(v, float) for v in result["ratio"].values())
    ratio = result["merged"]["infer_s"] / result["originals"]["infer_s"]
    assert result["ratio"]["infer"] == pytest.approx(ratio)
    setup_ = result["setup"]
    assert setup_["tasks"] == ["task0", "task1", "task2"]
    assert setup_["limit"] == pytest.approx(1 / 3)
    assert setup_["texts"] == 30 and setup_["threads"] == 1 and setup_["windows"] is True
    assert setup_["max_length"] == 32 and result["onnx"] == {}
    assert setup_["dtype"] == "bfloat16"
    print_bench(BenchResult.model_validate(result))
    table = capsys.readouterr().out
    assert "originals" in table and "merged" in table and "1/N = 0.333" in table
    assert "30 texts" in table and "long texts in windows" in table and "1 thread," in table
    assert "torch in bfloat16" in table


def _result(n: int) -> BenchResult:
    m = {"load_s": 1.0, "infer_s": 2.0, "peak_mb": 100.0, "infer_cpu_s": 2.0}
    ratio = dict.fromkeys(("load", "infer", "total", "memory", "infer_cpu"), 1.0)
    setup = {
        "tasks": [f"t{i}" for i in range(n)],
        "texts": n,
        "batch_size": 8,
        "max_length": 32,
        "device": "cpu",
        "threads": n,
        "repeats": 1,
        "windows": False,
        "limit": 1 / n,
    }
    result = {"originals": m, "merged": m, "ratio": ratio, "setup": setup, "runs": {}}
    return BenchResult.model_validate(result)


@pytest.mark.parametrize("n", [1, 2])
def test_the_table_counts_in_the_singular_for_one(capsys, monkeypatch, n):
    monkeypatch.setenv("COLUMNS", "400")
    print_bench(_result(n))
    out = capsys.readouterr().out
    s = "" if n == 1 else "s"
    assert f"hm3 bench: {n} task{s}, {n} text{s} (medians of 1)" in out, out
    assert f"torch in float32, {n} thread{s}, batch size 8" in out, out


def test_in_a_log_the_table_is_not_cut_to_80_columns(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe or a file: no width to keep to
    print_bench(_result(2))
    out = capsys.readouterr().out
    assert "┃ system    ┃" in out and "┃ memory ratio ┃" in out and "…" not in out, out


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a[:-1], "(missing: task2; not in the merged model: none)"),
        (lambda a: [*a, "--originals=extra=" + a[0].rpartition("=")[2]], "model: extra)"),
        (lambda a: [*a[:2], "--originals=task2={merged}"], "found 3 tasks"),
    ],
)
def test_bench_refuses_mismatched_originals(setup, tmp_path, capsys, monkeypatch, change, match):
    merged, originals, texts = setup
    argv = [a.format(merged=merged) for a in change(originals)]
    argv += ["--texts", texts, "--no-progress"]
    monkeypatch.chdir(tmp_path)  # a stray file written to the current directory would show
    expect_user_error(capsys, tmp_path, "bench", "--merged", merged, *argv, match=match,
                      names="--originals", watch=(merged,))  # fmt: skip


def test_bench_refuses_other_inputs(setup, capsys, monkeypatch, tmp_path):
    merged, originals, texts = setup
    base = ["bench", "--merged", merged, *originals, "--no-progress"]
    monkeypatch.chdir(tmp_path)
    for extra, match, names in [
        ((), "give the texts to classify with --texts FILE", "hm3 bench"),
        (("--texts", texts, "--onnx", tmp_path), "not an ONNX export", tmp_path),
        (("--texts", texts, "--device", "tpu"), "expected cpu or cuda", "--device tpu"),
    ]:
        expect_user_error(capsys, tmp_path, *base, *extra, match=match, names=names,
                          watch=(merged, texts))  # fmt: skip
