from __future__ import annotations

import logging

import pytest

from hm3.errors import Hm3Error
from hm3.model.labels import id2label, is_uninformative, layout, resolve_labels, tasks_from_config


@pytest.mark.parametrize("name", ["LABEL_0", "label_1", "label1", "0", "12", "Class_3", "LABEL-2"])
def test_uninformative_names(name):
    assert is_uninformative(name)


@pytest.mark.parametrize("name", ["benign", "label", "toxic_1x", "hate speech", "class"])
def test_informative_names(name):
    assert not is_uninformative(name)


def test_uninformative_replaced_from_config_else_class_i():
    assert resolve_labels("t", ["LABEL_0", "LABEL_1"], ("ham", "spam")) == ("ham", "spam")
    assert resolve_labels("t", ["LABEL_0", "LABEL_1"], None) == ("class_0", "class_1")
    # informative names are kept, per label
    assert resolve_labels("t", ["benign", "LABEL_1"], ("x", "attack")) == ("benign", "attack")


def test_informative_name_conflicting_with_config_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="hm3"):
        assert resolve_labels("t", ["neg", "pos"], ("pos", "neg")) == ("neg", "pos")
    assert "ignored" in caplog.text


def test_wrong_number_of_config_labels_is_an_error():
    with pytest.raises(Hm3Error, match="2 names given but the model has 3"):
        resolve_labels("hate", ["a", "b", "c"], ("x", "y"))


def test_repeats_within_a_task_are_renamed():
    assert resolve_labels("t", ["normal", "normal"], None) == ("normal", "normal_2")


def test_layout_and_prefixed_id2label_keep_repeats_across_tasks_apart():
    tasks = layout([("a", ("normal", "bad"), "x"), ("b", ("normal", "offensive", "hate"), "y")])
    assert [(t.start, t.end) for t in tasks] == [(0, 2), (2, 5)]
    assert id2label(tasks) == {
        "0": "a/normal",
        "1": "a/bad",
        "2": "b/normal",
        "3": "b/offensive",
        "4": "b/hate",
    }


def test_plain_classifier_is_one_task():
    config = {"id2label": {"0": "neg", "1": "pos"}}
    (task,) = tasks_from_config(config, "sentiment", "x")
    assert (task.name, task.labels, task.start, task.end) == ("sentiment", ("neg", "pos"), 0, 2)


def test_edited_hm3_block_is_refused():
    config = {
        "id2label": {"0": "a/x", "1": "a/y", "2": "b/z"},
        "hm3": {
            "version": 1,
            "tasks": [
                {"name": "a", "labels": ["x", "y"], "start": 0, "end": 2},
                {"name": "b", "labels": ["z"], "start": 1, "end": 2},
            ],
        },
    }
    with pytest.raises(Hm3Error, match="segment"):
        tasks_from_config(config, "m", "m")


def test_newer_metadata_version_is_refused():
    config = {
        "id2label": {"0": "a/x"},
        "hm3": {"version": 99, "tasks": [{"name": "a", "labels": ["x"], "start": 0, "end": 1}]},
    }
    with pytest.raises(Hm3Error, match="upgrade hm3"):
        tasks_from_config(config, "m", "m")
