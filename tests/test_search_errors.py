"""hm3 search: every bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import pytest
import yaml

from hm3.cli.app import main
from hm3.errors import Hm3Error
from hm3.search.inputs import SearchSpec, check_spec
from search_case import fails as _fails
from search_case import make_case, write_jsonl
from tiny import toy_texts


@pytest.mark.parametrize(
    ("space", "needles"),
    [
        ({"densty": {"beta": [1.2, 2]}}, ["search.densty", "did you mean 'density'"]),
        ({"weight": {"uniform": [2, 1]}}, ["search.weight", "empty range"]),
        ({"density": {"uniform": [0.5, 1.5]}}, ["search.density", "(0, 1]"]),
        ({"density": {"log_uniform": [0.0, 0.5]}}, ["search.density", "low > 0"]),
        ({"density": [0.5, 1.2]}, ["search.density", "(0, 1]"]),
        ({"density": {"beta": [0, 2]}}, ["search.density", "a and b must be > 0"]),
        ({"lambda": {"uniform": [1, 2], "gauss": 3}}, ["gauss"]),
        ({"merge_method": ["dare_ties", "regmean"]}, ["regmean cannot be searched"]),
        ({"merge_method": ["dare_ties", "tiez"]}, ["did you mean 'ties'"]),
        ({"epsilon": {"uniform": [0.1, 0.2]}}, ["search.epsilon", "not used by"]),
        ({"lambda": {"uniform": [1, 2], "per_model": True}}, ["per_model"]),
        ({"align": {"texts": "t.jsonl"}}, ["search.align", "move it to the top level"]),
        ({"wieght": {"uniform": [1, 2]}}, ["'search.wieght'", "valid keys in search:"]),
    ],
)
def test_bad_search_block(tmp_path, zoo_of, capsys, space, needles):
    case = make_case(tmp_path / "case", zoo_of("bert"), search=space)
    out = tmp_path / "out"
    _fails(capsys, ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
                    "--no-progress"], *needles)  # fmt: skip
    assert not out.exists()


def test_align_scale_range_needs_its_block_and_no_auto(tmp_path, zoo_of, capsys):
    zoo = zoo_of("bert")
    case = make_case(tmp_path / "a", zoo, search={"scale": {"uniform": [0.5, 2]}})
    args = ["--suite", str(case.suite), "--out", str(tmp_path / "o"), "--no-progress"]
    _fails(capsys, ["search", str(case.config), *args], "search.scale", "align")
    case = make_case(tmp_path / "b", zoo, align={"texts": "texts.jsonl", "scale": "auto"})
    _fails(capsys, ["search", str(case.config), *args], "align.scale", "uniform")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("texts", "needle"),
    [({"task0": "texts.jsonl"}, "align.texts: no file for task 'task2'"),
     ({"task0": "texts.jsonl", "task2": "texts.jsonl", "task9": "texts.jsonl"},
      "align.texts: 'task9' is no task of the merge"),
     ({"task0": "texts.jsonl", "task2": "none.jsonl"}, "align.texts.task2 ")],
    ids=["missing", "unknown", "no-file"],
)  # fmt: skip
def test_align_texts_per_task_names_every_task_with_a_file(tmp_path, zoo_of, capsys, texts,
                                                          needle):  # fmt: skip
    case = make_case(tmp_path / "case", zoo_of("bert"), align={"texts": texts})
    out = tmp_path / "out"
    _fails(capsys, ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
                    "--val-samples", "8", "--test-samples", "8", "--no-progress"],
           needle)  # fmt: skip
    assert not out.exists()


def test_align_texts_beside_the_cwd_but_not_the_yaml_are_refused_as_merge_does(
    tmp_path, zoo_of, capsys, monkeypatch
):
    # the search once read them from the cwd, so best/recipe.yaml named a file `hm3 merge`
    # of it could not find
    case = make_case(tmp_path / "case", zoo_of("bert"), align={"texts": "here.jsonl"})
    write_jsonl(tmp_path / "here.jsonl", [{"text": t} for t in toy_texts(20, seed=3)])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    _fails(capsys, ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
                    "--val-samples", "8", "--test-samples", "8", "--no-progress"],
           f"align.texts {tmp_path / 'case' / 'here.jsonl'}", "not found")  # fmt: skip
    assert not out.exists()


def test_align_texts_that_cannot_tell_a_head_anything_are_refused(tmp_path, zoo_of, capsys):
    # a copy of one text: the fit has nothing to go on (was a ValueError inside the first trial)
    (tmp_path / "case").mkdir()
    write_jsonl(tmp_path / "case" / "same.jsonl", [{"text": "the same text"}] * 20)
    case = make_case(tmp_path / "case", zoo_of("bert"), align={"texts": "same.jsonl"})
    out = tmp_path / "out"
    _fails(capsys, ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
                    "--val-samples", "8", "--test-samples", "8", "--no-progress"],
           "align.texts", "same.jsonl: its 20 text(s) all give the originals the same")  # fmt: skip
    assert not out.exists()


def test_a_suite_too_small_fails_before_the_alignment_start_up(tmp_path, zoo_of, capsys):
    # the originals' logits on the alignment texts take minutes on real models: a bad suite
    # must be refused first (here the texts are empty, so reaching them would fail differently)
    (tmp_path / "case").mkdir()
    write_jsonl(tmp_path / "case" / "empty.jsonl", [])
    case = make_case(tmp_path / "case", zoo_of("bert"), align={"texts": "empty.jsonl"})
    out = tmp_path / "out"
    _fails(capsys, ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
                    "--no-progress"], "all in the validation sample", "--test-suite")  # fmt: skip
    assert not out.exists()


def test_alignment_longer_than_scoring_warns(tmp_path, zoo_of, capsys):
    # align.max_length defaults to 512: with --max-length 16 every trial would align on texts
    # 32x longer than it scores (the --out check then stops the run before any model work)
    case = make_case(tmp_path / "case", zoo_of("bert"), align={"texts": "texts.jsonl"})
    (tmp_path / "out").mkdir()
    argv = ["search", str(case.config), "--suite", str(case.suite), "--out", str(tmp_path / "out"),
            "--no-progress"]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--max-length", "16"])
    err = " ".join(capsys.readouterr().err.split())  # the log handler wraps long lines
    assert exc.value.code == 2 and "--force" in err
    assert "align.max_length is 512 tokens, --max-length 16" in err, err
    _fails(capsys, argv, "--force")  # both 512: nothing to say, the error is the only line


def test_bad_run_options(tmp_path, zoo_of, capsys):
    case = make_case(tmp_path / "case", zoo_of("bert"))
    out = tmp_path / "out"
    base = ["search", str(case.config), "--out", str(out), "--no-progress"]
    _fails(capsys, base, "--suite")
    _fails(capsys, [*base, "--objective", "agreement"], "--texts")
    _fails(capsys, [*base, "--suite", str(case.suite), "--sampler", "grid"], "--sampler grid")
    _fails(capsys, [*base, "--suite", str(case.suite), "--timeout", "soon"], "--timeout soon")
    _fails(capsys, [*base, "--suite", str(case.suite), "--resume"], "--resume")
    _fails(capsys, [*base, "--suite", str(case.suite), "--self", str(case.models[0])], "--self")
    _fails(capsys, [*base, "--suite", str(case.suite), "--device", "tpu"], "--device tpu")
    _fails(capsys, [*base, "--suite", str(case.suite), "--timeout", "0"], "--timeout 0:")
    _fails(capsys, [*base, "--suite", str(case.suite), "--seed", "-1"], "--seed -1: expected")
    _fails(capsys, [*base, "--suite", str(case.suite), "--texts", str(case.texts)],
           "read only by --objective agreement")  # fmt: skip
    _fails(capsys, [*base, "--objective", "agreement", "--texts", str(case.root)], "a directory")
    _fails(capsys, [*base, "--suite", str(case.suite), "--base", str(case.base)],
           "read only with --self")  # fmt: skip
    assert not out.exists()
    self_args = ["search", "--self", str(case.models[0]), "--suite", str(case.suite)]
    _fails(capsys, [*self_args, "--out", str(out), "--no-progress"], "--base")
    for given in (f"={case.models[0]}", "task0="):
        _fails(capsys, ["search", "--self", given, "--base", str(case.base), "--suite",
                        str(case.suite), "--out", str(out)], f"--self {given}: expected NAME=DIR "
                        "with a name and a directory")  # fmt: skip
    typo = f"{case.root}/lr=1e-5"  # a path with '=' in it, not TASK=MODEL: named whole
    _fails(capsys, ["search", "--self", typo, "--base", str(case.base), "--suite",
                    str(case.suite), "--out", str(out)], typo)  # fmt: skip
    assert not out.exists()
    with pytest.raises(Hm3Error, match="self_task 'task0': names the task of --self MODEL"):
        check_spec(SearchSpec(config=case.config, suite=case.suite, self_task="task0"))


def test_self_merge_of_a_merged_model_is_refused(tmp_path, zoo_of, bert_ties_merged, capsys):
    case = make_case(tmp_path / "case", zoo_of("bert"))
    out = tmp_path / "out"
    _fails(capsys, ["search", "--self", f"task0={bert_ties_merged}", "--base", str(case.base),
                    "--suite", str(case.suite), "--out", str(out), "--no-progress"],
           "an hm3 model of 3 tasks", "merge the models it was made from")  # fmt: skip
    assert not out.exists()


def test_suite_without_a_row_for_a_task(tmp_path, zoo_of, capsys):
    case = make_case(tmp_path / "case", zoo_of("bert"))
    full = case.suite.read_text()
    suite = yaml.safe_load(full)
    suite["datasets"] = suite["datasets"][:1]  # only task0 is expected anywhere
    case.suite.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    _fails(capsys, ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
                    "--no-progress"], "task2")  # fmt: skip
    assert not out.exists()
    case.suite.write_text(full)
    rows = [{"text": f"good day {i}", "label": "benign"} for i in range(30)]
    rows[17]["label"] = "maybe"
    write_jsonl(case.root / "task0.jsonl", rows)  # a label task0 does not have
    _fails(capsys, ["search", str(case.config), "--suite", str(case.suite), "--out", str(out),
                    "--no-progress"], "maybe")  # fmt: skip
    assert not out.exists()


def test_resume_with_another_config_and_existing_out(tmp_path, zoo_of, capsys):
    case = make_case(tmp_path / "case", zoo_of("bert"))
    out = tmp_path / "out"
    argv = ["search", str(case.config), "--suite", str(case.suite), "--out", str(out), "--trials",
            "1", "--val-samples", "8", "--test-samples", "8", "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    _fails(capsys, argv, "--resume", "--force")  # out holds a study
    _fails(
        capsys,
        [*argv, "--resume", "--dtype", "bfloat16"],
        "another --dtype (float32 then, bfloat16 now)",
    )
    _fails(capsys, [*argv, "--resume", "--force"], "--resume --force: --resume continues the "
           "study in --out, --force deletes it to start over; pass one of them")  # fmt: skip
    data = yaml.safe_load(case.config.read_text())
    data["search"] = {"density": {"uniform": [0.2, 0.9]}}
    case.config.write_text(yaml.safe_dump(data))
    density = 'CONFIG\'s search.density ({"beta": [1.2, 2.0]} then, {"uniform": [0.2, 0.9]} now)'
    _fails(capsys, [*argv, "--resume", "--trials", "2"], f"another {density}; run it with")
    _fails(capsys, [*argv[:-1], "--seed", "9", "--resume"],
           f"another {density} and --seed (0 then, 9 now);")  # fmt: skip
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
