from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hm3.errors import Hm3Error
from hm3.io.checkpoint import Checkpoint, locate
from hm3.io.safetensors_writer import SafetensorsWriter


def _dir_with(tmp_path, tensors, name="m"):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file(tensors, str(d / "model.safetensors"))
    return d


def test_writer_round_trips_through_the_safetensors_library(tmp_path):
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d": torch.randn(2, 2).half(),
        "e": torch.zeros(0, 4),
    }
    file = tmp_path / "x.safetensors"
    writer = SafetensorsWriter(file, [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()])
    for k, v in tensors.items():
        writer.write(k, v)
    writer.close()
    back = load_file(str(file))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(back[k], v), k


def test_writer_refuses_out_of_order_and_incomplete(tmp_path):
    writer = SafetensorsWriter(
        tmp_path / "x.safetensors", [("a", (2,), torch.float32), ("b", (1,), torch.float32)]
    )
    with pytest.raises(RuntimeError, match="expected a"):
        writer.write("b", torch.zeros(1))
    writer.write("a", torch.zeros(2))
    with pytest.raises(RuntimeError, match="1 of 2"):
        writer.close()


def test_reader_reads_single_file_and_shards(tmp_path):
    t = {"x": torch.randn(4, 3), "y": torch.randn(7)}
    single = _dir_with(tmp_path, t)
    with Checkpoint(single) as ckpt:
        assert ckpt.tensors["x"].shape == (4, 3)
        assert torch.equal(ckpt.get("x"), t["x"]) and torch.equal(ckpt.get("y"), t["y"])
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text("{}")
    save_file({"x": t["x"]}, str(sharded / "model-00001-of-00002.safetensors"))
    save_file({"y": t["y"]}, str(sharded / "model-00002-of-00002.safetensors"))
    index = {
        "weight_map": {
            "x": "model-00001-of-00002.safetensors",
            "y": "model-00002-of-00002.safetensors",
        }
    }
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with Checkpoint(sharded) as ckpt:
        assert torch.equal(ckpt.get("y"), t["y"]) and torch.equal(ckpt.get("x"), t["x"])


def test_truncated_safetensors_names_the_file(tmp_path):
    d = _dir_with(tmp_path, {"x": torch.randn(64, 64)})
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(Hm3Error, match=r"model\.safetensors: truncated"):
        Checkpoint(d)
    (d / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(Hm3Error, match="truncated"):
        Checkpoint(d)
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(Hm3Error, match="corrupt"):
        Checkpoint(d)


def test_missing_shard_is_named(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"x": "part-1.safetensors"}})
    )
    with pytest.raises(Hm3Error, match=r"part-1\.safetensors"):
        Checkpoint(d)


def test_pickle_refused_unless_allowed_then_weights_only(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    torch.save({"x": torch.ones(2)}, d / "pytorch_model.bin")
    with pytest.raises(Hm3Error, match="allow_pickle=True"):
        Checkpoint(d)
    with Checkpoint(d, allow_pickle=True) as ckpt:
        assert torch.equal(ckpt.get("x"), torch.ones(2))
    # a pickle that is not plain tensors is refused even when pickles are allowed

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(Hm3Error, match="cannot load pickled weights safely"):
        Checkpoint(d, allow_pickle=True)


def test_locate_errors(tmp_path):
    with pytest.raises(Hm3Error, match="not found"):
        locate(str(tmp_path / "nope"), "models[0]")
    (tmp_path / "f").write_text("x")
    with pytest.raises(Hm3Error, match="is a file"):
        locate(str(tmp_path / "f"), "models[0]")
    with pytest.raises(Hm3Error, match="Hugging Face Hub"):
        locate("no-such-org/no-such-model-hm3-test", "models[0]")
