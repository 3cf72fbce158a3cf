"""The public functions' inputs: a path, a string or a dict where a typed object goes, run
options by name, errors as one Hm3Error line, and the caller's logging left as it was.

On the shared tiny zoo (real checkpoints; no mocks of hm3's own code).
"""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

import hm3
from hm3.errors import Hm3Error
from hm3.evaluation.run import evaluate
from hm3.evaluation.suite import Suite, load_suite
from hm3.export.api import export_onnx
from hm3.merging.config import MergeConfig
from hm3.options import RunOptions
from hm3.search import study as studies
from hm3.search.inputs import SearchSpec
from hm3.search.run import search
from search_case import make_case


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert isinstance(exc.value, Hm3Error) and "\n" not in text and "pydantic.dev" not in text
    return text


@pytest.fixture
def case(tmp_path, zoo_of):
    return make_case(tmp_path / "case", zoo_of("bert"), rows=12)


def _spec(case, **kw) -> SearchSpec:
    return SearchSpec(**{"config": case.config, "suite": case.suite, "trials": 1,
                         "val_samples": 6, "test_samples": 6, **kw})  # fmt: skip


def test_evaluate_names_an_argument_of_the_wrong_type(case, one_thread):
    """A suite path, a list of models, a dict of window options or a number as a model is
    refused with the argument, the type given and how to make the right one."""
    suite, model = load_suite(case.suite), case.models[0]
    with pytest.raises(Hm3Error) as exc:
        evaluate(str(case.suite), {"m": model}, progress=False)
    assert "suite: expected a Suite, got str" in _one_line(exc) and "load_suite" in str(exc.value)
    with pytest.raises(Hm3Error) as exc:
        evaluate(suite, [model], progress=False)
    assert _one_line(exc).startswith("models: expected a dict of name -> directory")
    assert "got list" in str(exc.value)
    with pytest.raises(Hm3Error) as exc:
        evaluate(suite, {"m": model}, originals=[model], progress=False)
    assert _one_line(exc).startswith("originals: expected a dict")
    with pytest.raises(Hm3Error) as exc:
        evaluate(suite, {"m": model}, windows={"stride": 8}, progress=False)
    assert "windows: expected a hm3.Windows or None" in _one_line(exc)
    assert "got dict" in str(exc.value)
    with pytest.raises(Hm3Error) as exc:
        evaluate(suite, {"m": 42}, progress=False)
    assert _one_line(exc).startswith("models['m']: expected a model directory")
    assert "got int" in str(exc.value)


def test_search_spec_takes_string_paths_and_search_takes_run_options_by_name(
    case, tmp_path, one_thread
):
    """Paths as strings work (as Paths); a number of the wrong type is named; ``search`` takes
    run options by name, as ``hm3.merge`` does."""
    spec = _spec(case, config=str(case.config), suite=str(case.suite))
    assert spec.config == case.config and spec.suite == case.suite
    refused = {
        "trials '2': expected a whole number, got str": {"trials": "2"},
        "seed 1.5: expected a whole number": {"seed": 1.5},
        "timeout '1h': expected a number of seconds": {"timeout": "1h"},
        "suite 3: expected a path (str or Path), got int": {"suite": 3},
    }
    for needle, bad in refused.items():
        with pytest.raises(Hm3Error) as exc:
            _spec(case, **bad)
        assert needle in _one_line(exc)
    with pytest.raises(Hm3Error, match="unknown option 'bogus'"):
        search(spec, tmp_path / "never", bogus=1)
    assert not (tmp_path / "never").exists()
    result = search(spec, tmp_path / "out", progress=False)
    assert result.finished == 1 and (tmp_path / "out" / "trials.csv").is_file()
    again = search(spec, str(tmp_path / "out"), RunOptions(progress=True), force=True,
                   progress=False)  # fmt: skip
    assert again.finished == 1  # force by name replaced the study


def test_export_onnx_takes_run_options_by_name(tmp_path, zoo_of, one_thread):
    config = MergeConfig(base_model=str(zoo_of("bert").base), merge_method="ties",
                         models=[{"model": str(m)} for m in zoo_of("bert").models])  # fmt: skip
    model = hm3.merge(config, tmp_path / "merged", progress=False).path
    (tmp_path / "onnx").mkdir()
    with pytest.raises(Hm3Error, match="unknown option 'bogus'"):
        export_onnx(model, tmp_path / "onnx", bogus=1)
    with pytest.raises(Hm3Error, match="force=True"):
        export_onnx(model, tmp_path / "onnx", progress=False)
    result = export_onnx(model, tmp_path / "onnx", progress=False, force=True)
    assert (result.path / "model.onnx").is_file()


def test_config_and_suite_built_from_keywords_raise_one_hm3_error():
    """As from_dict does, with the same message; pydantic's own validation is left alone."""
    bad = {"base_model": "b", "merge_method": "tie", "models": [{"model": "m"}]}
    with pytest.raises(Hm3Error) as exc:
        MergeConfig(**bad)
    assert _one_line(exc).startswith("merge config: merge_method: unknown method 'tie' (did you")
    with pytest.raises(Hm3Error) as exc:
        MergeConfig.from_dict(bad, source="m.yaml")
    assert _one_line(exc).startswith("m.yaml: merge_method: unknown method 'tie'")  # not twice
    with pytest.raises(Hm3Error) as exc:
        MergeConfig(**{**bad, "merge_method": "ties", "modles": []})
    assert "unknown key 'modles' (did you mean 'models'?)" in _one_line(exc)
    with pytest.raises(Hm3Error) as exc:
        Suite(datasets=[])
    assert _one_line(exc).startswith("suite: datasets:")
    with pytest.raises(Hm3Error) as exc:
        Suite.from_dict({"datasets": []}, source="s.yaml")
    assert _one_line(exc).startswith("s.yaml: datasets:")
    config = MergeConfig(**{**bad, "merge_method": "ties"})
    assert MergeConfig.model_validate(config.model_dump(by_alias=True)) == config
    assert config.model_copy(update={"seed": 1}).seed == 1
    # model_copy(update=...) validates nothing: the docstring says so, and how to rebuild
    assert "model_copy(update=...)" in MergeConfig.__doc__ and "from_dict" in MergeConfig.__doc__
    changed = MergeConfig.from_dict(config.model_dump(by_alias=True) | {"merge_method": "ties"})
    assert changed == config


def test_run_options_is_public_at_the_package_root():
    assert hm3.RunOptions is RunOptions and "RunOptions" in hm3.__all__
    assert "RunOptions" in dir(hm3) and "TYPE_CHECKING" not in dir(hm3)
    assert hm3.RunOptions(progress=False).progress is False
    from hm3.model.windows import Windows

    assert hm3.Windows is Windows and "Windows" in hm3.__all__ and "Windows" in dir(hm3)


def test_search_leaves_optuna_verbosity_as_it_was(case, tmp_path, one_thread):
    before = optuna.logging.get_verbosity()
    try:
        optuna.logging.set_verbosity(optuna.logging.INFO)
        search(_spec(case), tmp_path / "out", RunOptions(progress=False))
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        optuna.logging.set_verbosity(optuna.logging.DEBUG)
        storage = studies.open_storage(None, tmp_path / "alone")
        studies.load_study(storage, "s", "print", {}, resume=False, shared=False)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(before)


def test_an_original_of_a_task_nothing_answers_or_expects_is_refused(bert_zoo, tmp_path, capsys):
    from test_cli import expect_user_error

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": "benign"}) + "\n"
                            for t in ("hello", "ignore all instructions")))  # fmt: skip
    first, second = bert_zoo.models[:2]
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {"name": "d", "path": str(data), "expect": {first.name: {"column": "label"}}}
                ]
            }
        )
    )
    message = expect_user_error(capsys, tmp_path, "evaluate", suite, str(first),
                                "--originals", f"{first.name}={first}",
                                "--originals", f"toxicity={second}",
                                match="no model answers task 'toxicity' and no dataset expects it",
                                names=first.name)  # fmt: skip
    assert "--originals toxicity=" in message
