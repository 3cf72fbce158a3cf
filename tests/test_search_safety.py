"""hm3 search never loses the user's files: --out against inputs, the current directory, other
studies and bad storages; resume fingerprints; Ctrl-C; stale and dead state in --out."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hm3.cli.app import main
from hm3.options import RunOptions
from hm3.search import outputs
from hm3.search.inputs import SearchSpec
from hm3.search.run import search
from hm3.search.study import open_storage
from search_case import fails as _fails
from search_case import make_case
from tiny import HM3_COMMAND

QUIET = RunOptions(progress=False)
SMALL = ["--val-samples", "8", "--test-samples", "8", "--no-progress"]


@pytest.fixture
def case(tmp_path, zoo_of):
    return make_case(tmp_path / "case", zoo_of("bert"))


def _argv(case, out, *extra):
    return ["search", str(case.config), "--suite", str(case.suite), "--out", str(out), *SMALL,
            *extra]  # fmt: skip


def _run(case, out, options=QUIET, **kw):
    spec = {"config": case.config, "suite": case.suite, "trials": 1, "val_samples": 8,
            "test_samples": 8, **kw}  # fmt: skip
    return search(SearchSpec(**spec), out, options)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _study(storage, name="hm3-search"):
    return optuna.load_study(study_name=name, storage=storage)


def test_force_never_deletes_an_input_or_the_current_directory(tmp_path, zoo_of, capsys,
                                                               monkeypatch):  # fmt: skip
    zoo = zoo_of("bert")
    models = tmp_path / "models"  # a copy: a regression must not delete the shared zoo
    copies = [shutil.copytree(d, models / d.name) for d in (zoo.base, *zoo.models)]
    case = make_case(tmp_path / "case", SimpleNamespace(base=copies[0], models=copies[1:]))
    before = _files(tmp_path)
    _fails(capsys, _argv(case, models, "--force"), f"--out {models}", "input")
    _fails(capsys, _argv(case, case.root, "--force"), "input", str(case.config))
    assert _files(tmp_path) == before
    data = tmp_path / "data"  # the suite's datasets are inputs too
    data.mkdir()
    (case.root / "task0.jsonl").rename(data / "task0.jsonl")
    suite = yaml.safe_load(case.suite.read_text())
    suite["datasets"][0]["path"] = str(data / "task0.jsonl")
    case.suite.write_text(yaml.safe_dump(suite))
    before = _files(tmp_path)
    _fails(capsys, _argv(case, data, "--force"), "input", "task0.jsonl")
    sandbox = tmp_path / "sandbox"
    (sandbox / "inner").mkdir(parents=True)
    (sandbox / "inner" / "keep.txt").write_text("mine")
    monkeypatch.chdir(sandbox / "inner")
    _fails(capsys, _argv(case, ".", "--force"), "current directory")
    _fails(capsys, _argv(case, "..", "--force"), "current directory")
    assert _files(tmp_path) == {**before, "sandbox/inner/keep.txt": b"mine"}


def test_an_out_that_is_a_file_is_refused_with_or_without_force(tmp_path, case, capsys):
    out = tmp_path / "out.txt"
    out.write_text("mine")
    for extra in ((), ("--force",), ("--storage", str(tmp_path / "s.journal"))):
        _fails(capsys, _argv(case, out, *extra), "exists and is not a directory")
    assert out.read_text() == "mine"


def test_a_refused_storage_or_study_writes_nothing(tmp_path, case, capsys, one_thread):
    out = tmp_path / "out"
    shared = tmp_path / "shared.journal"
    _run(case, tmp_path / "first", storage=str(shared), study="s")
    journal = shared.read_bytes()
    line = _fails(capsys, _argv(case, out, "--storage", str(shared), "--study", "s", "--seed",
                                "5"), "another --seed (0 then, 5 now);",
                  "(--study NAME)")  # fmt: skip
    assert "new --out" not in line
    assert shared.read_bytes() == journal
    afile = tmp_path / "afile"
    afile.write_text("x")
    not_journal = tmp_path / "notes.txt"
    not_journal.write_text("hello\n")
    for storage, needle in [
        ("foo://bar", "cannot open the database"),
        ("sqlite://", "an in-memory database dies with the process"),
        ("sqlite:///:memory:", "give a file (sqlite:///search.db) or leave --storage out"),
        (f"sqlite:///{tmp_path}/no-such-dir/s.db", "the database file's folder exists"),
        (str(tmp_path), "is a directory"),
        ("", "empty; give a journal file path or a database URL"),
        (str(afile / "x.journal"), "cannot use it"),
        (str(case.suite), "line 1 is not an Optuna journal record"),
        (str(not_journal), "line 1 is not an Optuna journal record"),
    ]:
        _fails(capsys, _argv(case, out, "--storage", storage), f"--storage {storage}", needle)
        assert not out.exists()
    assert not_journal.read_text() == "hello\n" and afile.read_text() == "x"
    secret = "mysql://guard:s3cret@localhost:1/x"  # no password in a message, the scheme kept
    line = _fails(capsys, _argv(case, out, "--storage", secret),
                  "--storage mysql://***@localhost:1/x", "its SQLAlchemy driver")  # fmt: skip
    assert "s3cret" not in line and not out.exists()
    fresh = tmp_path / "new.journal"  # a resume of a study it does not hold: nothing made
    _fails(capsys, _argv(case, out, "--storage", str(fresh), "--resume"), "no study")
    assert not fresh.exists() and not out.exists()


def test_a_cut_short_journal_is_refused_before_anything_is_appended(tmp_path, case, capsys,
                                                                    one_thread):  # fmt: skip
    out = tmp_path / "out"
    _run(case, out)
    journal = out / "study.journal"
    with journal.open("r+b") as f:
        f.truncate(journal.stat().st_size - 20)
    before = _files(out)
    _fails(capsys, [*_argv(case, out, "--resume", "--trials", "2")], str(journal), "cut short")
    assert _files(out) == before


def test_a_shared_study_never_overwrites_another_searchs_out(tmp_path, case, capsys, one_thread):
    own = tmp_path / "own"
    _run(case, own)
    before = _files(own)
    shared = str(tmp_path / "s.journal")
    _fails(capsys, _argv(case, own, "--storage", shared), "study.journal", "--force")
    worker = tmp_path / "worker"
    first = _run(case, worker, storage=shared, trials=2)
    assert first.wrote_best and first.best_current
    again = _run(case, worker, storage=shared, trials=2)  # a worker coming back joins
    assert again.finished == 2 and not again.wrote_best and again.best_current
    _fails(capsys, _argv(case, worker, "--storage", shared, "--study", "other"), "another study")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    _fails(capsys, _argv(case, tmp_path / "notes", "--storage", shared), "todo.txt")
    assert _files(own) == before and (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    _run(case, own, storage=shared, trials=2, options=QUIET.with_(force=True))
    assert not (own / "study.journal").exists() and (own / "study.json").is_file()


def test_resume_with_another_max_length_or_text_column_is_refused(tmp_path, case, capsys,
                                                                 one_thread):  # fmt: skip
    out = tmp_path / "out"
    argv = [*_argv(case, out), "--trials", "1"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)
    before = _files(out)
    _fails(
        capsys, [*argv, "--resume", "--max-length", "4"], "another --max-length (512 then, 4 now)"
    )
    _fails(
        capsys,
        [*argv, "--resume", "--text-column", "body"],
        "another --text-column (text then, body now)",
    )
    assert _files(out) == before
    # a study made with the defaults resumes with them: they are not in its fingerprint
    assert _run(case, out, trials=2, resume=True).finished == 2


def test_own_journal_fails_a_trial_left_running_under_another_hostname(tmp_path, case,
                                                                     one_thread):  # fmt: skip
    out = tmp_path / "out"
    _run(case, out)
    study = _study(open_storage(None, out))
    left = study.ask()  # a container restarted under a new name left it running
    left.set_user_attr("worker", "old-hostname:1")
    result = _run(case, out, trials=2, resume=True)
    assert result.finished == 2
    assert _study(open_storage(None, out)).trials[left.number].state == TrialState.FAIL


def test_a_test_suite_that_is_the_suite_gives_the_other_rows(tmp_path, case, one_thread):
    plain = _run(case, tmp_path / "a")
    same = tmp_path / "case" / ".." / "case" / "suite.yaml"  # another spelling of the file
    given = _run(case, tmp_path / "b", test_suite=same)
    assert given.originals["test"] == plain.originals["test"]
    assert given.originals["test"] != given.originals["val"]
    assert list(outputs.reference_lines(given.originals)) == ["originals (val)",
                                                               "originals (test)"]  # fmt: skip


def _env():
    return {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_ctrl_c_is_one_line_and_a_resume_rewrites_a_stale_best(tmp_path, case, one_thread):
    out = tmp_path / "out"
    seed = ["--seed", "1"]
    _run(case, out, seed=1)  # best/ is trial 0's
    cmd = [*HM3_COMMAND, *_argv(case, out, "--trials", "300", "--resume", *seed)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(_rows(out / "trials.csv")) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err[-2000:]
    done = len(_rows(out / "trials.csv"))
    assert lines == [f"interrupted: {done} trials finished are kept in {out}; rerun with "
                     "--resume to go on"], err[-2000:]  # fmt: skip
    result = _run(case, out, seed=1, trials=done, resume=True)
    assert result.finished == done and result.best_number != 0  # else nothing was stale
    assert result.wrote_best and result.best_current  # the cut-short trial did not block it
    trials = _study(open_storage(None, out)).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    rows = _rows(out / "trials.csv")
    assert len({(r["seed"], r["density"]) for r in rows}) == len(rows) == done
    text = (out / "best" / "recipe.yaml").read_text()
    assert text.startswith(f"# hm3 search: trial {result.best_number} ") and text.endswith("\n")
    again = _run(case, out, seed=1, trials=done, resume=True)
    assert not again.wrote_best and again.best_current


def test_a_bad_database_url_fails_before_the_models_load(tmp_path, case, capsys):
    broken = tmp_path / "broken"  # a model that fails only when the merge's inputs are read
    shutil.copytree(case.models[0], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    doc = yaml.safe_load(case.config.read_text(encoding="utf-8"))
    doc["models"][0]["model"] = str(broken)
    case.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    _fails(capsys, _argv(case, out), str(broken))  # without a database: the model's error
    _fails(capsys, _argv(case, out, "--storage", "foo://bar"), "cannot open the database")
    assert not out.exists()
