"""What makes two runs the same study: the settings that decide its trials, and its files' bytes.

- **Fingerprint** (:func:`fingerprint`): a hash of the recipe and space, the paths of the
  models, suites and texts, the sample sizes, objective, sampler and seed. Stored in the study
  (user attribute ``hm3_fingerprint``); a run with another one may not join or resume it. The
  description itself is stored too (``hm3_spec``), so that the refusal names what differs
  (``--seed 0, now 9``).
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
SPEC = "hm3_spec"
CONTENTS = "hm3_contents"
#: the files of a model directory that decide what it computes (config, weights, tokenizer)
MODEL_FILES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".txt", ".model")
_CHUNK = 1 << 20
#: what each key of the study's description is called on the command line
_OPTIONS = {
    "recipe": "CONFIG", "space": "CONFIG's search: block", "self": "--self", "suite": "--suite",
    "test_suite": "--test-suite", "texts": "--texts", "val": "--val-samples",
    "test": "--test-samples", "objective": "--objective", "sampler": "--sampler",
    "seed": "--seed", "prune": "--prune/--no-prune", "dtype": "--dtype",
    "max_length": "--max-length", "text_column": "--text-column",
}  # fmt: skip
#: options added after the first studies: recorded only away from these values, so that
#: older studies still resume; a key left out of the description stands for its value here
LEFT_OUT = {"dtype": "float32", "max_length": 512, "text_column": "text"}


def fingerprint(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description of the study."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _set(value: Any) -> Any:
    """``value`` without the mapping keys that hold nothing (a range's unused kinds)."""
    if isinstance(value, dict):
        return {k: _set(v) for k, v in value.items() if v is not None}
    return [_set(v) for v in value] if isinstance(value, list) else value


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    text = value if isinstance(value, str) else json.dumps(_set(value), sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_difference(then: Any, now: Any, where: str = "") -> tuple[str, Any, Any]:
    """The key path (``models[1].parameters.weight``) where two JSON values differ, as deep as
    one difference goes (two keys of one mapping that differ are shown together)."""
    if isinstance(then, dict) and isinstance(now, dict):
        keys = [k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)]
        if len(keys) == 1:
            return _first_difference(then.get(keys[0]), now.get(keys[0]), f"{where}.{keys[0]}")
        return where.lstrip("."), {k: then.get(k) for k in keys}, {k: now.get(k) for k in keys}
    if isinstance(then, list) and isinstance(now, list) and len(then) == len(now):
        for i, (a, b) in enumerate(zip(then, now, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{where}[{i}]")
    return where.lstrip("."), then, now


def differences(then: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between a study's recorded description and this run's, as the options a
    user typed: ``--seed (0 then, 9 now) and --dtype (float32 then, bfloat16 now)``."""
    now = json.loads(json.dumps(now, sort_keys=True, default=str))  # as the storage holds it
    parts = []
    for key in sorted(set(then) | set(now), key=lambda k: list(_OPTIONS).index(k)
                      if k in _OPTIONS else len(_OPTIONS)):  # fmt: skip
        a, b = then.get(key, LEFT_OUT.get(key)), now.get(key, LEFT_OUT.get(key))
        if a == b:
            continue
        name = _OPTIONS.get(key, key)
        if key in ("recipe", "space"):
            path, a, b = _first_difference(a or {}, b or {})
            path = f"search.{path}" if key == "space" and path else path
            name = f"CONFIG's {path}" if path else name
        parts.append(f"{name} ({_shown(a)} then, {_shown(b)} now)")
    if len(parts) > 3:
        parts[2:] = [f"{len(parts) - 2} more"]
    return " and ".join(parts) if len(parts) < 3 else f"{', '.join(parts[:-1])} and {parts[-1]}"


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
    study: Any, storage: Any, spec: dict[str, Any], files: dict[str, str], *, how: str, fresh: str
) -> None:
    """Record this run's description ``spec`` (its fingerprint too) and contents in ``study``
    (held in ``storage``) where it has none; refuse the run where it has others. ``how``: the
    option that joined the study, for the message; ``fresh``: how to start a new study
    instead."""
    import optuna

    print_ = fingerprint(spec)

    def reloaded() -> dict[str, Any]:  # what the storage holds now, other workers' writes too
        return optuna.load_study(study_name=study.study_name, storage=storage).user_attrs

    attrs = study.user_attrs
    if attrs.get(FINGERPRINT) is None:
        study.set_user_attr(FINGERPRINT, print_)
        attrs = reloaded()  # a worker that set it at the same moment wins: compare with it
    if attrs[FINGERPRINT] != print_:
        recorded = attrs.get(SPEC)  # a study stored before hm3 recorded it has only the hash
        what = differences(recorded, spec) if isinstance(recorded, dict) else ""
        what = f"another {what}" if what else \
            "another config, samples, objective, sampler or seed"  # fmt: skip
        raise Hm3Error(
            f"{how}: study {study.study_name!r} was started with {what}; run it with the same "
            f"ones, or start a new study ({fresh})"
        )
    if attrs.get(SPEC) is None:  # a study stored before hm3 recorded it gets it now
        study.set_user_attr(SPEC, json.loads(json.dumps(spec, sort_keys=True, default=str)))
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
