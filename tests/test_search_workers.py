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

import pytest

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


def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path, zoo_of):
    case = make_case(tmp_path / "case", zoo_of("bert"))
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(case, out, "--trials", "30"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    csv_file = out / "trials.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if csv_file.exists() and len(_rows(csv_file)) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = _rows(csv_file)
    assert 3 <= len(before) < 30
    assert not (out / "best").exists()
    done = subprocess.run(_cmd(case, out, "--trials", "30", "--resume"), env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    after = _rows(csv_file)
    assert len(after) == 30
    assert len({r["number"] for r in after}) == 30
    assert len({(r["seed"], r["density"]) for r in after}) == 30  # no trial repeated
    assert after[: len(before)] == before  # completed trials kept as they were
    assert (out / "best" / "recipe.yaml").is_file()


def _two_workers(case, tmp_path, storage, study, trials, *more):
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
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    return outs


def _check_shared(outs, storage, study_name, trials):
    _, finished = _finished(storage, study_name)
    assert len(finished) == trials
    assert sorted({t.number for t in finished}) == sorted(t.number for t in finished)
    assert len({(t.user_attrs["seed"], str(t.user_attrs["values"])) for t in finished}) == trials
    workers = {t.user_attrs["worker"] for t in finished}
    assert 1 <= len(workers) <= 2
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
    url = os.environ.get("HM3_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HM3_TEST_POSTGRES_URL is unset: no PostgreSQL server (.ci/run starts one)")
    case = make_case(tmp_path / "case", zoo_of("bert"))
    name = f"hm3-test-{uuid.uuid4().hex[:8]}"
    outs = _two_workers(case, tmp_path, url, name, 10, "--prune")
    _check_shared(outs, url, name, 10)
    study, _ = _finished(url, name)  # --prune: the best's decisions are in the database
    attr = study.best_trial.user_attrs[ATTR]
    assert decode(attr, tuple(attr["shape"])).shape[1] == 2


def test_workers_opening_a_fresh_postgresql_database_at_once_all_get_it(tmp_path):
    """Optuna creates its tables when a storage is first opened; workers started together on an
    empty database race to create them (CI hit PostgreSQL's duplicate-type error this way)."""
    url = os.environ.get("HM3_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HM3_TEST_POSTGRES_URL is unset: no PostgreSQL server (.ci/run starts one)")
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
