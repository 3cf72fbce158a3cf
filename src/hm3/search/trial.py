"""One trial's parameters: drawn through an Optuna trial, turned into a plain merge config.

:func:`suggest` asks an Optuna trial for every parameter of the space that the trial's method
reads (a density is not drawn for ``tsv``). A Beta prior is searched as its quantile ``q`` in
[0, 1] and mapped through the inverse CDF, so a sampler drawing ``q`` uniformly (``paper``,
``random``) draws exactly from Beta(a, b), and TPE or CMA-ES search the prior's quantiles.
:func:`trial_config` writes the values into the recipe mapping and validates it as a
:class:`~hm3.merging.config.MergeConfig`: the trial's full, re-runnable recipe. It merges and
scores nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hm3.merging.config import MergeConfig
from hm3.merging.plan import task_names
from hm3.methods import METHODS
from hm3.search.space import Range, SearchSpace

_SWITCHES = {"normalize", "rescale", "lambda", "alpha"}


def quantile_name(key: str) -> str:
    """The Optuna parameter that holds a Beta-distributed value's quantile."""
    return f"{key}~q"


def suggest(trial: Any, space: SearchSpace, method: str, tasks: list[str]) -> dict[str, Any]:
    """Draw one trial's values: ``merge_method`` and each searched parameter by key.

    Keys are the parameter's name (``density``) or, per model, ``density[task]``.
    """
    methods = space.methods(method)
    chosen = methods[0]
    if len(methods) > 1:
        chosen = trial.suggest_categorical("merge_method", list(methods))
    values: dict[str, Any] = {"merge_method": chosen}
    reads = METHODS[chosen].per_model_parameters | METHODS[chosen].global_parameters | {"scale"}
    for name, rng in space.ranges().items():
        if name not in reads:
            continue
        keys = [f"{name}[{t}]" for t in tasks] if rng.per_model else [name]
        for key in keys:
            values[key] = draw(trial, key, name, rng)
    return values


def draw(trial: Any, key: str, name: str, rng: Range) -> float:
    """One value of ``rng`` through the trial (Beta: through its quantile)."""
    if rng.choices is not None:
        return float(trial.suggest_categorical(key, list(rng.choices)))
    if rng.uniform is not None:
        return float(trial.suggest_float(key, *rng.uniform))
    if rng.log_uniform is not None:
        return float(trial.suggest_float(key, *rng.log_uniform, log=True))
    from scipy.stats import beta

    q = trial.suggest_float(quantile_name(key), 0.0, 1.0)
    value = float(beta.ppf(q, *rng.beta))  # type: ignore[misc]
    top = 1.0 if name == "density" else 1.0 - 1e-6  # density may be 1; gamma, epsilon < 1
    return min(max(value, 1e-6), top)


def absolute_recipe(data: dict[str, Any], config: MergeConfig) -> dict[str, Any]:
    """The recipe mapping with every local path absolute, so it runs from any directory."""
    out = copy.deepcopy(data)

    def fix(ref: str) -> str:  # the YAML's path, even where only the cwd has the file (as merge)
        resolved = Path(config.resolve(ref)).expanduser()
        return str(resolved.resolve()) if resolved.exists() or str(resolved) != ref else ref

    out["base_model"] = fix(out["base_model"])
    entries = [e for e in out.get("models") or [] if isinstance(e, dict)]
    entries = [e for e in entries if isinstance(e.get("model"), str)]
    written = [(e["model"], Path(config.resolve(e["model"])).expanduser()) for e in entries]
    for entry in entries:
        entry["model"] = fix(entry["model"])
    _keep_written_names(entries, written)
    align = out.get("align")
    texts = align.get("texts") if isinstance(align, dict) else None
    if isinstance(texts, str):
        align["texts"] = fix(texts)  # type: ignore[index]
    elif isinstance(texts, dict):  # a file per task
        align["texts"] = {k: fix(v) if isinstance(v, str) else v for k, v in texts.items()}  # type: ignore[index]
    return out


def _keep_written_names(entries: list[dict[str, Any]], written: list[tuple[str, Path]]) -> None:
    """Where a model path is a link, resolving it renames the task ``hm3 merge`` names after
    the directory: the names the paths as written give are then written into the entries.
    ``written``: each entry's path as written, and where it points from the config."""

    def names(refs: list[tuple[str, Path]]) -> list[str]:
        return task_names([(e.get("name"), *ref) for e, ref in zip(entries, refs, strict=True)])

    as_written = names(written)
    if as_written != names([(e["model"], Path(e["model"])) for e in entries]):
        for entry, name in zip(entries, as_written, strict=True):
            entry["name"] = name


def trial_config(
    recipe: dict[str, Any], values: dict[str, Any], tasks: list[str], seed: int, source: str
) -> MergeConfig:
    """The plain merge config of one trial: the recipe with the trial's values written in.

    Parameters the trial's method does not read are dropped from the recipe; a searched value
    shared by all models replaces the models' own values of that parameter.
    """
    data = copy.deepcopy(recipe)
    method = METHODS[values["merge_method"]]
    data["merge_method"] = method.name
    data["seed"] = seed
    per_model, switches = method.per_model_parameters, method.global_parameters
    params = {
        k: v
        for k, v in dict(data.get("parameters") or {}).items()
        if k in per_model or (k in _SWITCHES and k in switches)
    }
    models = [dict(m) for m in data["models"]]
    for entry in models:
        entry["parameters"] = {
            k: v for k, v in dict(entry.get("parameters") or {}).items() if k in per_model
        }
    for key, value in values.items():
        name, _, task = key.partition("[")
        if name in ("merge_method", "scale"):
            continue
        if task:
            models[tasks.index(task.rstrip("]"))]["parameters"][name] = value
        else:
            params[name] = value
            for entry in models:
                entry["parameters"].pop(name, None)
    for entry in models:
        if not entry["parameters"]:
            entry.pop("parameters")
    data["models"] = models
    data["parameters"] = params
    if not params:
        data.pop("parameters")
    if "scale" in values:
        data["align"] = {**data["align"], "scale": values["scale"]}
    return MergeConfig.from_dict(data, source=source)
