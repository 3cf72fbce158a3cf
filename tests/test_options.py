"""The run options and their rules (hm3.options): one device rule, one dtype table, one
number-or-auto validator, applied alike by the library and every command.

CUDA's presence is switched with ``torch.cuda.is_available`` (torch's, not hm3's), so the rule
is checked on a machine without a GPU; nothing here moves a tensor to CUDA.
"""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch
from typer.main import get_command

from hm3.cli.app import app, main
from hm3.errors import Hm3Error, cli_spelling
from hm3.merging.config import MergeConfig
from hm3.options import (
    DEVICE_RULE,
    DTYPES,
    RUN_FIELDS,
    RunOptions,
    number_or_auto,
    resolve_device,
    run_options,
    torch_dtype,
)


def _cuda(monkeypatch, present: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)


def test_the_device_rule(monkeypatch):
    _cuda(monkeypatch, True)
    assert resolve_device(None) == resolve_device("cpu") == "cpu"  # CPU unless asked
    assert resolve_device("auto") == resolve_device(" Auto ") == "cuda"
    assert resolve_device("cuda") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    _cuda(monkeypatch, False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(Hm3Error, match="device='cuda:0': CUDA is not available here; use device"):
        resolve_device("cuda:0")
    with cli_spelling(), pytest.raises(Hm3Error, match="--device cuda:0: CUDA is not available"):
        resolve_device("cuda:0")
    for bad in ("tpu", "cuda:x", "cuda0", "gpu"):
        with pytest.raises(Hm3Error, match=f"device='{bad}': expected 'cpu' or 'cuda' .* 'auto'"):
            resolve_device(bad)
        with cli_spelling(), pytest.raises(Hm3Error, match=f"--device {bad}: expected cpu or cuda"):
            resolve_device(bad)


def test_run_options_check_their_values_and_names():
    assert RunOptions(device=None).device == "cpu"  # None is the default, as before
    assert RunOptions(device="CUDA").device == "cuda"  # the spelling only: no CUDA check yet
    for field, value in (("batch_size", 0), ("max_length", -1), ("batch_size", 1.5)):
        with pytest.raises(Hm3Error, match=f"{field} .*: expected a whole number >= 1"):
            RunOptions(**{field: value})
    with pytest.raises(Hm3Error, match=r"^dtype 'float8': expected one of float32, float16"):
        RunOptions(dtype="float8")
    base = RunOptions(batch_size=8)
    assert run_options(None, {}) == RunOptions()
    assert run_options(base, {}) is base
    assert run_options(base, {"progress": False}) == RunOptions(batch_size=8, progress=False)
    assert base.with_(force=True).force and not base.force  # frozen: a copy
    with pytest.raises(Hm3Error, match="unknown option 'devices'; the run options are device"):
        run_options(None, {"devices": "cpu"})
    assert set(RUN_FIELDS) == {
        "device", "dtype", "batch_size", "max_length", "progress", "force", "allow_pickle"
    }  # fmt: skip


def test_one_dtype_table():
    assert typing.get_args(MergeConfig.model_fields["dtype"].annotation) == DTYPES
    assert [torch_dtype(name) for name in DTYPES] == [torch.float32, torch.float16, torch.bfloat16]
    assert torch_dtype(None) == torch.float32


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.5", 0.5), (" AUTO ", "auto"), (0, 0.0), (np.float32(2), 2.0), (np.int64(3), 3.0)],
)
def test_number_or_auto_accepts(value, expected):
    assert number_or_auto(value, "--ridge") == expected


@pytest.mark.parametrize("value", [-1, "-1", math.nan, math.inf, "nan", "best", True, None, [1]])
def test_number_or_auto_names_the_flag_the_value_and_the_choices(value):
    with pytest.raises(Hm3Error) as err:
        number_or_auto(value, "--ridge")
    assert str(err.value) == f"ridge={value!r}: expected a finite number >= 0 or auto"
    with cli_spelling(), pytest.raises(Hm3Error) as err:
        number_or_auto(value, "--ridge")
    assert str(err.value) == f"--ridge {value}: expected a finite number >= 0 or auto"


def test_number_or_auto_bounds_and_defaults():
    assert number_or_auto(None, "--scale", strict=True, default=1.0) == 1.0
    with pytest.raises(
        Hm3Error, match=r"^scale=0: expected a finite number > 0 or auto \(default 1\)$"
    ):
        number_or_auto(0, "--scale", strict=True, default=1.0)
    with cli_spelling(), pytest.raises(Hm3Error, match=r"^--scale 0: expected a finite number"):
        number_or_auto(0, "--scale", strict=True, default=1.0)
    with pytest.raises(Hm3Error, match=r"^expected a finite number >= 0 or auto$"):  # no name
        number_or_auto(-1, None)


def _device_options():
    command = get_command(app)
    for name, verb in command.commands.items():
        for param in verb.params:
            if param.name == "device":
                yield name, param


def test_every_device_option_is_the_shared_one_and_states_the_rule():
    found = dict(_device_options())
    assert {"merge", "predict", "evaluate", "align", "demo"} <= set(found)
    for name, param in found.items():
        assert param.default == "cpu", name
        assert param.help == f"Where to run: {DEVICE_RULE}.", name


def test_the_library_and_the_commands_default_to_the_cpu_where_cuda_is_present(
    bert_zoo, monkeypatch, capsys
):
    import hm3

    _cuda(monkeypatch, True)  # before, load() and `hm3 predict` would have picked CUDA
    assert hm3.load(bert_zoo.models[0]).device.type == "cpu"
    with pytest.raises(SystemExit) as done:
        main(["predict", str(bert_zoo.models[0]), "hello", "--json"])
    assert done.value.code == 0, capsys.readouterr().err
    _cuda(monkeypatch, False)
    assert hm3.load(bert_zoo.models[0], device="auto").device.type == "cpu"
    with pytest.raises(SystemExit) as done:
        main(["predict", str(bert_zoo.models[0]), "hello", "--device", "auto"])
    assert done.value.code == 0, capsys.readouterr().err
