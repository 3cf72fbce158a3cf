"""hm3 search against what a hands-on review hit: label-free texts that are all blank, the
``cmaes`` sampler, a second search on an ``--out`` whose search still runs, and a database
that goes away mid-search. On the tiny zoo; real files, real processes' locks."""

from __future__ import annotations

import csv
import os
import socket

import pytest
import sqlalchemy

from hm3.cli.app import main
from hm3.search.database import lost
from hm3.search.out_dir import OutLock
from search_case import fails, make_case, write_jsonl

ARGS = ["--val-samples", "6", "--test-samples", "4", "--no-progress"]


def _search(case, out, *extra) -> list[str]:
    return ["search", str(case.config), "--suite", str(case.suite), "--out", str(out), *ARGS,
            *extra]  # fmt: skip


def test_label_free_texts_that_are_all_blank_are_refused(tmp_path, zoo_of, capsys):
    """Every trial would score NaN, which Optuna fails and never counts: it ran forever."""
    case = make_case(tmp_path / "case", zoo_of("bert"))
    rows = [{"text": ""}, {"text": "  "}, {"text": "\u200b"}]
    blank = write_jsonl(tmp_path / "blank.jsonl", rows)
    out = tmp_path / "out"
    argv = ["search", str(case.config), "--objective", "agreement", "--texts", str(blank),
            "--out", str(out), "--trials", "2", "--no-progress"]  # fmt: skip
    fails(capsys, argv, f"--texts {blank}", "every text in column 'text' is blank")
    assert not out.exists()


def test_the_cmaes_sampler_runs(tmp_path, zoo_of, one_thread):
    space = {"density": {"uniform": [0.2, 0.9]}, "weight": {"uniform": [0.5, 1.5]}}
    case = make_case(tmp_path / "case", zoo_of("bert"), rows=12, search=space)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(_search(case, out, "--trials", "4", "--sampler", "cmaes"))
    assert exc.value.code == 0
    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and len({r["density"] for r in rows}) == 4


def test_a_second_search_on_a_running_out_is_refused(tmp_path, zoo_of, capsys, one_thread):
    """The first search's running trial would be failed as a dead worker's (the first then
    died on its next write); --force would delete its study under it."""
    case = make_case(tmp_path / "case", zoo_of("bert"), rows=12)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(_search(case, out, "--trials", "2"))
    assert exc.value.code == 0
    capsys.readouterr()
    running = OutLock(out)  # what the first search holds while it runs
    running.take()
    try:
        before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
        for flag in ("--resume", "--force"):
            refused = f"--out {out}: another hm3 search (pid {os.getpid()}) is running in it"
            fails(capsys, _search(case, out, "--trials", "3", flag), refused)
        assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before
    finally:
        running.release()
    with pytest.raises(SystemExit) as exc:  # released (as when its process ends): resumed
        main(_search(case, out, "--trials", "3", "--resume"))
    assert exc.value.code == 0


def test_a_database_gone_mid_search_is_one_line_not_a_bug():
    url = "postgresql+psycopg2://hm3:secret@127.0.0.1:1/nothing"  # port 1: nothing listens
    try:
        sqlalchemy.create_engine(url).connect()
    except sqlalchemy.exc.OperationalError as real:
        try:  # as Optuna surfaces it: its own error (or a bug of its own) raised on the way out
            raise UnboundLocalError("cannot access local variable 'updated_state'") from real
        except UnboundLocalError as wrapped:
            error = lost(wrapped, url)
    assert error is not None
    text = str(error)
    assert text.startswith("--storage postgresql+psycopg2://***@127.0.0.1:1/nothing: the database")
    assert "rerun the same command once it is back" in text and "secret" not in text
    assert "\n" not in text
    assert lost(ValueError("not a database's"), url) is None
    integrity = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    assert lost(integrity, url) is None  # a bug, not a server gone


def test_a_resume_clears_what_a_killed_search_left_half_written(tmp_path, zoo_of, one_thread):
    """SIGKILL mid-write leaves a temporary best/ (up to a model's size), a plot's temporary
    file and the journal's lock file (which stalls the next run for Optuna's 30 s of grace)."""
    case = make_case(tmp_path / "case", zoo_of("bert"), rows=12)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(_search(case, out, "--trials", "2"))
    assert exc.value.code == 0
    (out / ".best.tmp-k1ll3d").mkdir()
    (out / ".best.tmp-k1ll3d" / "model.safetensors").write_bytes(b"x" * 1000)
    (out / ".search.tmp-99999.png").write_bytes(b"png")
    (out / "study.journal.lock").write_text("")
    (out / "study.journal.lock1234.rename").write_text("")
    with pytest.raises(SystemExit) as exc:
        main(_search(case, out, "--trials", "3", "--resume"))
    assert exc.value.code == 0
    left = sorted(p.name for p in out.iterdir() if p.name.startswith(".") or "lock" in p.name)
    assert left == [".lock"]


def _journal_study(tmp_path):
    import optuna

    from hm3.search import study as studies

    journal = str(tmp_path / "j.journal")
    storage = studies.open_storage(journal, tmp_path)
    return optuna.create_study(storage=storage, study_name="s", direction="maximize"), journal


def test_a_trial_marked_as_this_process_is_a_predecessors_and_reaped(tmp_path):
    """A restarted container keeps its host name and often its pid: the RUNNING trial of the
    process that died there looks like this one's, which runs none while it reaps."""
    from hm3.search import study as studies

    study, _ = _journal_study(tmp_path)
    for own in (False, True):
        ghost = study.ask()
        ghost.set_user_attr(studies.WORKER, studies.worker_id())
        assert studies.reap_dead_trials(study, own=own) == 1
    assert studies.counted(study) == (0, 0)


def test_two_workers_reaping_one_dead_trial_at_once_both_go_on(tmp_path):
    """Both saw it RUNNING; the second's write finds it failed already (Optuna raises)."""
    import optuna

    from hm3.search import study as studies

    study, journal = _journal_study(tmp_path)
    dead = study.ask()
    dead.set_user_attr(studies.WORKER, f"{socket.gethostname()}:999999999")  # no such pid
    other = optuna.load_study(study_name="s", storage=studies.open_storage(journal, tmp_path))
    listed = other.get_trials

    def listed_then_reaped_by_the_first(*args, **kwargs):
        trials = listed(*args, **kwargs)
        assert studies.reap_dead_trials(study) == 1  # the first worker, between read and write
        return trials

    other.get_trials = listed_then_reaped_by_the_first
    assert studies.reap_dead_trials(other) == 0


def test_a_worker_that_ran_nothing_yet_waits_then_runs_a_dead_peers_trial(
    tmp_path, zoo_of, capsys, one_thread
):
    """Logging a line per trial (progress on, not a terminal), a worker that had run no trial
    when the study's last one (a peer's) ended in its peer's death goes on to replace it."""
    import subprocess
    import threading

    import optuna

    from hm3.search import study as studies

    case = make_case(tmp_path / "case", zoo_of("bert"), rows=12)
    journal = str(tmp_path / "j.journal")
    shared = ["--storage", journal, "--study", "s", "--val-samples", "6", "--test-samples", "4"]
    argv = ["search", str(case.config), "--suite", str(case.suite), *shared]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "w0"), "--trials", "1", "--no-progress"])
    assert exc.value.code == 0
    peer = subprocess.Popen(["sleep", "3"])  # alive when w1 starts, dead while it waits
    threading.Thread(target=peer.wait, daemon=True).start()  # no zombie: its pid ends
    study = optuna.load_study(study_name="s", storage=studies.open_storage(journal, tmp_path))
    running = study.ask()
    running.set_user_attr(studies.WORKER, f"{socket.gethostname()}:{peer.pid}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "w1"), "--trials", "2"])
    err = capsys.readouterr().err
    assert exc.value.code == 0, err
    assert studies.counted(study) == (2, 0)
    assert (tmp_path / "w1" / "best" / "recipe.yaml").is_file()


def test_an_out_that_cannot_be_locked_is_one_line():
    from pathlib import Path

    from hm3.errors import Hm3Error

    with pytest.raises(Hm3Error, match=r"^--out /proc/self: cannot lock it \(.*\); check that"):
        OutLock(Path("/proc/self")).take()


@pytest.mark.parametrize("shared", [False, True])
def test_ctrl_c_while_best_is_written_says_how_to_get_it_and_a_rerun_writes_it(
    tmp_path, zoo_of, capsys, monkeypatch, one_thread, shared
):  # fmt: skip
    """Ctrl-C as ``best/`` was being written said only "interrupted"; a shared study's rerun
    then never wrote ``best/``, as the worker that was to write it had ended its trials."""
    from hm3.search import outputs

    case = make_case(tmp_path / "case", zoo_of("bert"), rows=12)
    out = tmp_path / "out"
    storage = ["--storage", str(tmp_path / "s.journal"), "--study", "s"] if shared else []
    real = outputs.write_best

    def pressed(*args, **kwargs):  # Ctrl-C as the write starts
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_best", pressed)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(_search(case, out, "--trials", "2", *storage))
    assert exc.value.code == 130
    where = "study 's'; rerun the command" if shared else f"{out}; rerun with --resume"
    assert capsys.readouterr().err.strip() == (
        f"interrupted: 2 trials finished are kept in {where} to finish its outputs (best/, the "
        "plots)"
    )
    assert not (out / "best").exists()
    monkeypatch.setattr(outputs, "write_best", real)
    with pytest.raises(SystemExit) as exc:
        main(_search(case, out, "--trials", "2", *storage, *([] if shared else ["--resume"])))
    assert exc.value.code == 0
    assert (out / "best" / "recipe.yaml").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # written once: a second rerun leaves it be
        main(_search(case, out, "--trials", "2", *storage, *([] if shared else ["--resume"])))
    assert exc.value.code == 0 and "/best (already trial #" in capsys.readouterr().err


def test_best_is_written_by_a_rerun_that_found_the_study_full_not_by_a_waiting_worker(tmp_path):
    """A worker that waited for the others' last trials ends with no trial of its own, as a
    rerun does: only the rerun (the study full when it started) may write a best/ nobody wrote,
    or a worker that waited would merge it beside the finisher."""
    import optuna
    from optuna.trial import create_trial

    from hm3.search.inputs import SearchSpec
    from hm3.search.study import open_storage
    from hm3.search.workers import BEST_WRITTEN, best_due

    journal = tmp_path / "s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(journal), tmp_path))
    for value in (0.4, 0.6):
        study.add_trial(create_trial(value=value))
    spec = SearchSpec(config=tmp_path / "m.yaml", trials=2, storage=str(journal), study="s")
    out, label = tmp_path / "out", "hm3 search: trial 1 of the study with fingerprint f"
    assert not best_due(study, spec, out, (set(), False, False), label)  # it waited
    assert best_due(study, spec, out, (set(), False, True), label)  # a rerun, none written
    study.set_user_attr(BEST_WRITTEN, label)
    assert not best_due(study, spec, out, (set(), False, True), label)  # written once
