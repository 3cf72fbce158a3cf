"""``hm3.io.signals.held`` and the search journal's lock under Ctrl-C."""

from __future__ import annotations

import signal
import threading

import pytest
from optuna.storages.journal import JournalFileOpenLock
from optuna.study import StudyDirection

from hm3.io.signals import held
from hm3.search.study import JOURNAL, open_storage


def test_ctrl_c_inside_the_block_lands_after_it():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with held():
            signal.raise_signal(signal.SIGINT)
            steps.append("block")  # the block goes on to its end
        steps.append("after")
    assert steps == ["block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_block_inside_another_is_part_of_it():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with held():
            with held():
                signal.raise_signal(signal.SIGTERM)
            assert seen == []  # held to the end of the outer block
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_ctrl_c_acts_at_once_and_only_once():
    steps = []
    with pytest.raises(KeyboardInterrupt), held():  # e.g. a database that no longer answers
        signal.raise_signal(signal.SIGINT)
        steps.append("held")
        signal.raise_signal(signal.SIGINT)
        steps.append("went on")
    assert steps == ["held"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with held():
        pass  # nothing left over to send


def test_a_handler_that_a_second_press_ran_keeps_what_it_set():
    def ending(signum, frame):  # as the CLI's: later SIGTERMs ignored during the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, ending)
    try:
        with pytest.raises(KeyboardInterrupt), held():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_is_sent_before_ctrl_c_when_both_came():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt), held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # not lost to the KeyboardInterrupt
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_ignored_signal_stays_ignored_and_nothing_is_held_off_the_main_thread():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with held():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    handlers = []

    def other():
        with held():
            handlers.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert handlers == [signal.default_int_handler]


def test_ctrl_c_while_the_journal_lock_is_given_back_leaves_no_lock_file(tmp_path, monkeypatch):
    # Ctrl-C landing in Optuna's release left the lock file behind (the next run waited out
    # its grace period) or raised FileNotFoundError from its clean-up
    release = JournalFileOpenLock.release
    sent = []

    def interrupted_release(self):
        if not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGINT)
        release(self)

    monkeypatch.setattr(JournalFileOpenLock, "release", interrupted_release)
    storage = open_storage(None, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        storage.create_new_study([StudyDirection.MAXIMIZE], "s")
    assert sent
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL]  # no lock, no rename file
    monkeypatch.undo()
    assert open_storage(None, tmp_path).get_study_id_from_name("s") >= 0  # the record is whole
