"""``hm3 serve --onnx``: the directory written by ``hm3 export onnx`` served through ONNX Runtime
(:func:`hm3.export.runtime.load_onnx`) answers as the torch model does."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import hm3
from hm3.merging.config import MergeConfig
from hm3.model.windows import Windows
from hm3.options import RunOptions
from serving import running
from tiny import toy_texts

pytest.importorskip("onnxruntime")
TEXTS = toy_texts(6, seed=4)
ATOL = 1e-4  # ONNX Runtime against torch, float32


@pytest.fixture(scope="module")
def dirs(zoo_factory, tmp_path_factory, one_thread):
    """A TIES merge of the tiny zoo trained a little (its answers depend on the text), exported."""
    from hm3.export.api import export_onnx

    zoo = zoo_factory("bert", train_steps=40)
    models = [{"model": str(m)} for m in zoo.models]
    config = MergeConfig(base_model=str(zoo.base), merge_method="ties", models=models)
    root = tmp_path_factory.mktemp("serve-onnx")
    merged = hm3.merge(config, root / "merged", progress=False).path
    exported = export_onnx(merged, root / "onnx", options=RunOptions(progress=False)).path
    return merged, exported


def test_serve_onnx_answers_as_torch(dirs, one_thread):
    merged, exported = dirs
    want = hm3.load(merged, device="cpu").predict_proba(TEXTS)
    with running(exported, onnx=True) as url:
        assert httpx.get(f"{url}/v1/tasks").json()["runtime"] == "onnxruntime"
        got = httpx.post(f"{url}/v1/classify", json={"texts": TEXTS}, timeout=60).json()
        raw = httpx.post(f"{url}/predict", json={"inputs": TEXTS[0], "raw_scores": True})
    for task, probs in want.items():  # else a server that ignored the texts could pass
        assert np.ptp(probs, axis=0).max() > 100 * ATOL, f"{task} hardly depends on the text"
    for row, result in enumerate(got["results"]):
        for task, probs in want.items():
            scores = list(result["tasks"][task]["scores"].values())
            np.testing.assert_allclose(scores, probs[row], atol=ATOL)
    assert raw.status_code == 200 and len(raw.json()) == 2 + 3 + 4


def test_serve_onnx_refuses_a_torch_directory(dirs):
    from hm3.errors import Hm3Error
    from hm3.serve.server import build
    from hm3.serve.settings import ServeSettings

    with pytest.raises(Hm3Error, match="export"):
        build(dirs[0], ServeSettings(onnx=True))


def test_info_reports_the_precision_the_export_runs_in(dirs, tmp_path):
    """TEI's ``GET /info``: ``model_dtype`` is what the model runs in: an export's (int8)."""
    from hm3.export.api import export_onnx

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(f'{{"text": "{t}"}}\n' for t in toy_texts(40, seed=2)))
    int8 = export_onnx(
        dirs[0], tmp_path / "q", quantize="int8", texts=texts, min_agreement=0, progress=False
    ).path
    bf16 = RunOptions(batch_size=64, dtype="bfloat16")
    for folder, settings, dtype in (
        (dirs[1], {"onnx": True}, "float32"),
        (int8, {"onnx": True}, "int8"),
        (dirs[0], {}, "float32"),
        (dirs[0], {"options": bf16}, "bfloat16"),  # torch: the weights' dtype
    ):
        with running(folder, **settings) as url:
            assert httpx.get(f"{url}/info").json()["model_dtype"] == dtype


def test_an_export_shorter_than_max_length_says_so_at_startup(dirs, tmp_path, caplog):
    """An export reads at most the tokens it was exported at: serving it with a longer
    --max-length warns once, naming both lengths; an export at the model's length does not."""
    from hm3.export.api import export_onnx
    from hm3.serve.server import build
    from hm3.serve.settings import ServeSettings

    short = export_onnx(dirs[0], tmp_path / "short", max_length=8, progress=False).path
    for windows in (Windows(), None):
        caplog.clear()
        build(short, ServeSettings(onnx=True, windows=windows))
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        how = "read in windows of 8" if windows else "cut to their first 8"
        assert len(warned) == 1 and "exported at 8 tokens" in warned[0] and how in warned[0]
        assert "--max-length 512 asked" in warned[0]
    caplog.clear()
    build(short, ServeSettings(onnx=True, options=RunOptions(max_length=8)))
    build(dirs[1], ServeSettings(onnx=True))  # exported at the merged model's full length
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
