"""Peak memory of a merge grows with the largest tensor, not with the model size.

Two merges of three models each run in fresh processes: shallow models (2 layers) and deep
ones (24 layers, ~75 MB each, the same largest tensor). Holding whole models would cost the deep
merge ~300 MB more; streaming costs about nothing more. Peak RSS is compared between the two
runs of one test (a ratio of measurements, never an absolute time or size).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from hm3.merging.config import MergeConfig
    from hm3.merging.stream import merge
    cfg = MergeConfig.from_yaml(sys.argv[1])
    merge(cfg, sys.argv[2], progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def _zoo(root, layers):
    config = BertConfig(
        vocab_size=100,
        hidden_size=256,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root / "base")
    models = []
    for i, k in enumerate((2, 3, 4)):
        config.num_labels = k
        BertForSequenceClassification(config).save_pretrained(root / f"m{i}")
        models.append({"model": str(root / f"m{i}")})
    yaml = root / "merge.yaml"
    yaml.write_text(
        json.dumps(
            {
                "base_model": str(root / "base"),
                "merge_method": "ties",
                "parameters": {"density": 0.5},
                "models": models,
            }
        )
    )
    return yaml


def _peak_rss_kb(yaml, out):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(yaml), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_model_size(tmp_path):
    shallow = _zoo(tmp_path / "shallow", 2)
    deep = _zoo(tmp_path / "deep", 24)
    model_mb = (tmp_path / "deep" / "m0" / "model.safetensors").stat().st_size / 2**20
    assert model_mb > 70
    rss_shallow = _peak_rss_kb(shallow, tmp_path / "out1") / 1024
    rss_deep = _peak_rss_kb(deep, tmp_path / "out2") / 1024
    # whole-model loading of 3 models + base would add ~4 × 70 MB; allow a fraction of one model
    assert rss_deep - rss_shallow < 0.5 * model_mb, (rss_shallow, rss_deep, model_mb)
