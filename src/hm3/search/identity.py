"""What makes two runs the same study: the settings that decide its trials, and its files' bytes.

- **Fingerprint** (:func:`fingerprint`): a hash of the recipe and space, the paths of the
  models, suites and texts, the sample sizes, objective, sampler and seed. Stored in the study
  (user attribute ``hm3_fingerprint``); a run with another one may not join or resume it.
- **Contents** (:func:`contents`): one digest per file or model directory the search reads
  (models, base, suites and their datasets, ``--texts``, the alignment texts), stored as
  ``hm3_contents``. A model retrained in place, an edited suite, or a worker whose copy of a
  model differs from the others' would otherwise mix two studies under one fingerprint; the run
  is refused and told which file changed. A study stored before hm3 recorded contents gets
  them from its next run.

:func:`check` does both, for :func:`hm3.search.study.load_study`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hm3.errors import Hm3Error

FINGERPRINT = "hm3_fingerprint"
CONTENTS = "hm3_contents"
#: the files of a model directory that decide what it computes (config, weights, tokenizer)
MODEL_FILES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".txt", ".model")
_CHUNK = 1 << 20


def fingerprint(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description of the study."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def contents(paths: Iterable[Path]) -> dict[str, str]:
    """Each path's digest, by absolute path: a file's bytes; a directory's model files (their
    names and bytes); a path that does not exist (a hub id) is left out."""
    out: dict[str, str] = {}
    for path in paths:
        path = Path(path).absolute()
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MODEL_FILES)
        else:
            continue
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        out[str(path)] = digest.hexdigest()[:16]
    return out


def check(
    study: Any, storage: Any, print_: str, files: dict[str, str], *, how: str, fresh: str
) -> None:
    """Record this run's fingerprint and contents in ``study`` (held in ``storage``) where it has
    none; refuse the run where it has others. ``how``: the option that joined the study, for
    the message; ``fresh``: how to start a new study instead."""
    import optuna

    def reloaded() -> dict[str, Any]:  # what the storage holds now, other workers' writes too
        return optuna.load_study(study_name=study.study_name, storage=storage).user_attrs

    attrs = study.user_attrs
    if attrs.get(FINGERPRINT) is None:
        study.set_user_attr(FINGERPRINT, print_)
        attrs = reloaded()  # a worker that set it at the same moment wins: compare with it
    if attrs[FINGERPRINT] != print_:
        raise Hm3Error(
            f"{how}: study {study.study_name!r} was started with another config, samples, "
            f"objective, sampler or seed; run it with the same ones, or start a new study ({fresh})"
        )
    if attrs.get(CONTENTS) is None:
        study.set_user_attr(CONTENTS, files)
        attrs = reloaded()
    recorded = attrs[CONTENTS]
    changed = [p for p, d in files.items() if recorded.get(p, d) != d]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise Hm3Error(
            f"{how}: {changed[0]}{more} changed since study {study.study_name!r} started (same "
            f"path, other bytes); restore it, or start a new study ({fresh})"
        )
