"""A tiny search case for the ``hm3 search`` tests: two tiny classifiers, a suite, texts."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from tiny import toy_texts


@dataclass(frozen=True)
class Case:
    root: Path
    config: Path
    suite: Path
    texts: Path
    models: tuple[Path, ...]
    base: Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_case(root: Path, zoo, *, rows: int = 40, search: dict | None = None, **extra) -> Case:
    """merge.yaml (dare_ties of the zoo's task0 and task2), suite.yaml and texts.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    models = (zoo.models[0], zoo.models[2])
    names = ("task0", "task2")
    labels = (("benign", "jailbreak"), ("w", "x", "y", "z"))
    datasets = []
    for i, (name, labs) in enumerate(zip(names, labels, strict=True)):
        texts = toy_texts(rows, seed=100 + i)
        write_jsonl(root / f"{name}.jsonl",
                    [{"text": t, "label": rng.choice(labs)} for t in texts])  # fmt: skip
        datasets.append({"name": f"d_{name}", "path": f"{name}.jsonl",
                         "expect": {name: {"column": "label"}}})  # fmt: skip
    suite = root / "suite.yaml"
    suite.write_text(yaml.safe_dump({"datasets": datasets}), encoding="utf-8")
    texts = write_jsonl(root / "texts.jsonl", [{"text": t} for t in toy_texts(48, seed=7)])
    doc = {
        "base_model": str(zoo.base),
        "merge_method": "dare_ties",
        "models": [{"model": str(m), "name": n} for m, n in zip(models, names, strict=True)],
        "seed": 3,
        **extra,
    }
    if search is not None:
        doc["search"] = search
    config = root / "merge.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return Case(root, config, suite, texts, models, zoo.base)


def fails(capsys, argv, *needles) -> str:
    """Run ``hm3 ARGV``; it must exit 2 with one ``error:`` line holding every needle."""
    import pytest

    from hm3.cli.app import main
    from test_cli import transformers_as_a_user_sees_it

    capsys.readouterr()  # what building the tiny models printed
    with pytest.raises(SystemExit) as exc, transformers_as_a_user_sees_it():
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in " ".join(lines), err
    return lines[0]
