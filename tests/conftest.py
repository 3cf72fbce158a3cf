"""Shared fixtures: tiny real checkpoints per architecture family, built once per session."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

# before anything imports transformers: it and huggingface_hub read these once, on import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tiny import make_base, make_classifier

LABELS = (("benign", "jailbreak"), ("LABEL_0", "LABEL_1", "LABEL_2"), ("w", "x", "y", "z"))


@dataclass(frozen=True)
class Zoo:
    base: Path
    models: tuple[Path, ...]
    family: str


def _build(root: Path, family: str, *, bare: bool = True, train_steps: int = 0) -> Zoo:
    base = make_base(root / "base", family, bare=bare)
    models = tuple(
        make_classifier(base, root / f"task{i}", labels, seed=10 + i, train_steps=train_steps)
        for i, labels in enumerate(LABELS)
    )
    return Zoo(base, models, family)


@pytest.fixture(scope="session")
def zoo_factory(tmp_path_factory):
    cache: dict[tuple, Zoo] = {}

    def get(family: str = "bert", *, bare: bool = True, train_steps: int = 0) -> Zoo:
        key = (family, bare, train_steps)
        if key not in cache:
            root = tmp_path_factory.mktemp(
                f"zoo-{family}-{'bare' if bare else 'clf'}-{train_steps}"
            )
            cache[key] = _build(root, family, bare=bare, train_steps=train_steps)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not spin against a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bert_zoo(zoo_factory) -> Zoo:
    return zoo_factory("bert")


# -- tiny zoos whose tokenizer sees words --------------------------------------------------------
@pytest.fixture(scope="session")
def zoo_of(zoo_factory, tmp_path_factory):
    """The shared tiny zoo, copied without ``tokenizer.json``, so texts tokenize from vocab.txt.

    An early ``tokenizer.json`` held only the 5 special tokens, so every word was [UNK] and the
    fits saw about a dozen distinct feature vectors (one per text length); tests/tiny.py's
    ``write_tokenizer`` now checks that words map to themselves. The copies also keep tests
    that read files by path apart from the zoo other fixtures share.
    """
    cache = {}

    def get(family):
        if family not in cache:
            zoo = zoo_factory(family)
            root = tmp_path_factory.mktemp(f"words-{family}")
            dirs = []
            for src in (zoo.base, *zoo.models):
                skip = shutil.ignore_patterns("tokenizer.json")
                shutil.copytree(src, root / src.name, ignore=skip)
                dirs.append(root / src.name)
            cache[family] = type(zoo)(dirs[0], tuple(dirs[1:]), family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def bert_ties_merged(zoo_of, tmp_path_factory) -> Path:
    """A TIES merge of the tiny BERT zoo's classifiers, built once for the serving tests."""
    import hm3
    from hm3.merging.config import MergeConfig

    zoo = zoo_of("bert")
    models = [{"model": str(m)} for m in zoo.models]
    config = MergeConfig(base_model=str(zoo.base), merge_method="ties", models=models)
    return hm3.merge(config, tmp_path_factory.mktemp("ties") / "merged", progress=False).path


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """HM3_CACHE for the session, with every pinned source fetched once (the real downloads)."""
    from hm3.demo.sources.fetch import fetch_sources

    cache = tmp_path_factory.mktemp("hm3-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("HM3_CACHE", str(cache))
    fetch_sources()
    yield cache
    patch.undo()


def pytest_collection_modifyitems(items):
    """Tests that need the pinned downloads (the ``demo_cache`` fixture) are marked ``network``."""
    for item in items:
        if "demo_cache" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.network)


@pytest.fixture(autouse=True)
def _hm3_logging(caplog):
    caplog.set_level(logging.WARNING, logger="hm3")
