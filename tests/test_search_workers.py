"""hm3 search as processes: resume after SIGKILL, several workers on one study (journal file,
PostgreSQL). The PostgreSQL test needs ``HM3_TEST_POSTGRES_URL`` (``.ci/run`` starts a
throwaway server and sets it)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hm3.search import study as studies
from hm3.search.pruning import ATTR, decode
from search_case import make_case

ARGS = ["--val-samples", "12", "--test-samples", "8", "--no-progress", "--sampler", "random"]


def _cmd(case, out, *extra):
    return [sys.executable, "-m", "hm3.cli.app", "search", str(case.config), "--suite",
            str(case.suite), "--out", str(out), *ARGS, *extra]  # fmt: skip


def _env():
    return {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def _finished(storage, name):
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=storage)
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return study, [t for t in study.get_trials() if t.state in states]


def _postgres_url() -> str:
    """The test server's URL, or a skip that says why there is none (.ci/postgres.sh)."""
    url = os.environ.get("HM3_TEST_POSTGRES_URL")
    if not url:
        why = os.environ.get("HM3_TEST_POSTGRES_SKIP", "HM3_TEST_POSTGRES_URL is unset")
        pytest.skip(f"no PostgreSQL server: {why} (.ci/postgres.sh starts one)")
    return url


def _running(journal) -> list[int]:
    """The numbers of the trials the journal holds as running (reading it takes no lock)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    if not journal.is_file():
        return []
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="hm3-search", storage=storage)
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def _kill_mid_trial(proc, out, deadline) -> int:
    """SIGKILL ``proc`` while it runs a trial numbered 3 or more; that trial's number. The
    process is stopped first, so the trial seen running is the one the kill cuts short."""
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "trials.csv").exists() and len(_rows(out / "trials.csv")) >= 3:
            proc.send_signal(signal.SIGSTOP)
            cut = [n for n in _running(out / "study.journal") if n >= 3]
            if cut:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return cut[0]
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    proc.kill()
    err = proc.stderr.read().decode()[-2000:]
    pytest.fail(f"no trial numbered 3 or more was seen running: {err}")


def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path, zoo_of):
    case = make_case(tmp_path / "case", zoo_of("bert"))
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(case, out, "--trials", "30"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    csv_file = out / "trials.csv"
    cut = _kill_mid_trial(proc, out, time.monotonic() + 300)
    assert proc.returncode == -signal.SIGKILL
    before = _rows(csv_file)
    assert 3 <= len(before) < 30 and str(cut) not in {r["number"] for r in before}
    assert not (out / "best").exists()
    done = subprocess.run(_cmd(case, out, "--trials", "30", "--resume"), env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    after = _rows(csv_file)
    assert len(after) == 30
    assert len({r["number"] for r in after}) == 30
    assert str(cut) not in {r["number"] for r in after}  # the trial cut short: failed, not kept
    assert len({r["density"] for r in after}) == 30  # no draw repeated (each trial its own)
    assert after[: len(before)] == before  # completed trials kept as they were
    assert (out / "best" / "recipe.yaml").is_file()
    from hm3.search.study import open_storage

    _, finished = _finished(open_storage(None, out), "hm3-search")
    assert cut not in {t.number for t in finished} and not _running(out / "study.journal")


def _hold(proc, lock) -> bool:
    """SIGSTOP ``proc`` unless it may hold the shared journal's lock (another worker would
    wait for it): the lock file is checked once the process is stopped, and if it exists the
    process is let go (True: held)."""
    proc.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
        time.sleep(0.001)
    if lock is not None and lock.exists():
        proc.send_signal(signal.SIGCONT)
        return False
    return True


def _two_workers(case, tmp_path, storage, study, trials, *more):
    """Two ``hm3 search`` workers on one study, started together. The first to join the study
    is held (SIGSTOP) until the other has joined too, so that both run trials whatever their
    start-up times."""
    outs = [tmp_path / f"w{i}" for i in range(2)]
    extra = ["--trials", str(trials), "--storage", storage, "--study", study, *more]
    procs = [
        subprocess.Popen(
            _cmd(case, out, *extra),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    lock = None if "://" in storage else Path(storage + ".lock")  # Optuna's journal lock file
    joined = lambda i: (outs[i] / "study.json").exists()  # noqa: E731 (written as trials start)
    held, deadline = None, time.monotonic() + 300
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if held is None:
            first = next((i for i in (0, 1) if joined(i)), None)
            if first is not None and _hold(procs[first], lock):
                held = first
        elif joined(1 - held):
            break
        time.sleep(0.005)
    if held is not None:
        procs[held].send_signal(signal.SIGCONT)
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    return outs


def test_workers_starting_a_trial_at_the_same_moment_draw_apart(tmp_path, monkeypatch):
    """Two workers that both counted the stored trials before either created its own still
    draw different values: the sampler is seeded from the trial's number, not from the count.
    (The barrier holds each worker at its sampler until the other has reached its own.)"""
    import threading

    import optuna

    journal = str(tmp_path / "j.journal")
    optuna.create_study(storage=studies.open_storage(journal, tmp_path), study_name="s",
                        direction="maximize")  # fmt: skip
    barrier, real, draws = threading.Barrier(2), studies.make_sampler, []

    def synced(kind, seed):
        barrier.wait(timeout=60)
        return real(kind, seed)

    monkeypatch.setattr(studies, "make_sampler", synced)

    def worker():
        study = optuna.load_study(study_name="s", storage=studies.open_storage(journal, tmp_path))

        def objective(trial):
            draws.append((trial.number, trial.suggest_float("density", 0, 1)))
            return draws[-1][1]

        studies.run_one(study, objective, "random", 4, 10)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(n for n, _ in draws) == [0, 1]
    assert draws[0][1] != draws[1][1], draws


def _check_shared(outs, storage, study_name, trials):
    _, finished = _finished(storage, study_name)
    assert len(finished) == trials
    assert sorted({t.number for t in finished}) == sorted(t.number for t in finished)
    assert len({str(t.user_attrs["values"]) for t in finished}) == trials  # no draw repeated
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2  # both ran trials
    writers = [out for out in outs if (out / "best").is_dir()]
    assert len(writers) == 1  # written once, by the worker that finished the study
    assert len(_rows(writers[0] / "trials.csv")) == trials


def test_two_workers_share_one_journal(tmp_path, zoo_of):
    case = make_case(tmp_path / "case", zoo_of("bert"))
    journal = str(tmp_path / "shared.journal")
    outs = _two_workers(case, tmp_path, journal, "shared", 12)
    from hm3.search.study import open_storage

    _check_shared(outs, open_storage(journal, tmp_path), "shared", 12)


def test_two_workers_share_one_postgresql_study(tmp_path, zoo_of):
    url = _postgres_url()
    case = make_case(tmp_path / "case", zoo_of("bert"))
    name = f"hm3-test-{uuid.uuid4().hex[:8]}"
    bare = url.replace("postgresql+psycopg2://", "postgresql://", 1)  # as the README writes it
    outs = _two_workers(case, tmp_path, bare, name, 10, "--prune")
    _check_shared(outs, url, name, 10)
    study, _ = _finished(url, name)  # --prune: the best's decisions are in the database
    attr = study.best_trial.user_attrs[ATTR]
    assert decode(attr, tuple(attr["shape"])).shape[1] == 2


def test_workers_opening_a_fresh_postgresql_database_at_once_all_get_it(tmp_path):
    """Optuna creates its tables when a storage is first opened; workers started together on an
    empty database race to create them (CI hit PostgreSQL's duplicate-type error this way)."""
    url = _postgres_url()
    import threading

    import sqlalchemy

    from hm3.search.study import open_storage

    db = f"hm3_race_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    fresh = url.rsplit("/", 1)[0] + "/" + db
    workers = 6
    barrier, errors, storages = threading.Barrier(workers), [], []

    def open_one():
        barrier.wait()
        try:
            storages.append(open_storage(fresh, tmp_path))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=open_one) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert len(storages) == workers
        for storage in storages:
            assert storage.get_all_studies() == []
            storage.engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()


def _running_of(journal: str, study: str, pid: int) -> list[int]:
    """The trials of ``study`` that process ``pid`` runs now, by the journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    loaded = optuna.load_study(
        study_name=study, storage=JournalStorage(JournalFileBackend(journal))
    )
    running = loaded.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in running if str(t.user_attrs.get("worker", "")).endswith(f":{pid}")]


def test_a_worker_killed_mid_trial_leaves_its_trial_to_the_others(tmp_path, zoo_of):
    """One of two workers dies (SIGKILL) mid-trial after the other has started: the other fails
    the dead worker's trial, runs one in its place, and writes ``best/`` as the finisher."""
    case = make_case(tmp_path / "case", zoo_of("bert"))
    journal, trials = str(tmp_path / "shared.journal"), 12
    lock = Path(journal + ".lock")
    extra = ["--trials", str(trials), "--storage", journal, "--study", "s"]
    start = lambda out: subprocess.Popen(_cmd(case, out, *extra), env=_env(),  # noqa: E731
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True)  # fmt: skip
    doomed = start(tmp_path / "w0")
    deadline = time.monotonic() + 300
    while not ((tmp_path / "w0" / "study.json").exists() and _hold(doomed, lock)):
        assert time.monotonic() < deadline and doomed.poll() is None, "w0 never joined"
        time.sleep(0.01)
    survivor = start(tmp_path / "w1")  # w0 waits, stopped, until w1 runs trials too
    while not (tmp_path / "w1" / "trials.csv").exists():
        assert time.monotonic() < deadline and survivor.poll() is None, "w1 ran no trial"
        time.sleep(0.01)
    cut = None
    while cut is None:
        assert time.monotonic() < deadline and doomed.poll() is None, "w0 ended unkilled"
        mine = _running_of(journal, "s", doomed.pid)  # w0 is stopped here
        if mine:
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
            cut = mine[0]
            break
        doomed.send_signal(signal.SIGCONT)
        time.sleep(0.01)
        while not _hold(doomed, lock):
            time.sleep(0.001)
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-2000:]
    from hm3.search.study import open_storage

    _, finished = _finished(open_storage(journal, tmp_path), "s")
    assert len(finished) == trials and cut not in {t.number for t in finished}
    assert (tmp_path / "w1" / "best" / "recipe.yaml").is_file()


def _interrupted_run(tmp_path, monkeypatch, method, when):
    """One trial of ``run_one`` on a journal whose ``method`` sends Ctrl-C right after the call
    for which ``when`` holds (Optuna's own windows, hit on purpose); the trial as stored."""
    import optuna
    from optuna.storages import JournalStorage

    storage = studies.open_storage(None, tmp_path)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    real = getattr(JournalStorage, method)

    def interrupted(self, *args, **kwargs):
        done = real(self, *args, **kwargs)
        if when(args):
            signal.raise_signal(signal.SIGINT)
        return done

    monkeypatch.setattr(JournalStorage, method, interrupted)
    with pytest.raises(KeyboardInterrupt):
        studies.run_one(study, lambda trial: trial.suggest_float("density", 0, 1), "random", 0, 5)
    monkeypatch.undo()
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    return trial


def test_ctrl_c_as_a_trial_is_stored_complete_is_an_interrupt_after_it(tmp_path, monkeypatch):
    # inside Optuna 5.1's tell it became UnboundLocalError: an internal error, not Ctrl-C
    from optuna.trial import TrialState

    trial = _interrupted_run(tmp_path, monkeypatch, "set_trial_state_values",
                             lambda args: args[1] == TrialState.COMPLETE)  # fmt: skip
    assert trial.state == TrialState.COMPLETE


def test_ctrl_c_just_after_a_trial_is_created_fails_it_under_its_worker(tmp_path, monkeypatch):
    # it stayed RUNNING with no worker named: in a shared study nobody could reap it, and the
    # study never ended (nor was best/ written)
    from optuna.trial import TrialState

    trial = _interrupted_run(tmp_path, monkeypatch, "create_new_trial", lambda args: True)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[studies.WORKER] == studies.worker_id()
