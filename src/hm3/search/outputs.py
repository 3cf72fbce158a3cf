"""What a search leaves in ``--out``: ``trials.csv``, ``search.png``, ``importance.png``, ``best/``.

- ``trials.csv``: one row per finished trial (complete or pruned), from the study's storage:
  number, method, seed, every parameter's value, validation score per task and average (F1, or
  agreement and probability similarity with ``--objective agreement``, whichever were
  computed), test score when taken, pruned, seconds. Rewritten atomically after every trial.
- ``search.png``: validation scores (dots; bold where they triggered a test) and test scores
  (stars) against the parameter that mattered most, the originals' averages as horizontal
  lines (the paper's Figure 3). ``importance.png``: Optuna's parameter importances, when more
  than one parameter was searched.
- ``best/``: the best trial rebuilt by :func:`hm3.recipe.merge` (what ``hm3 merge`` runs) from
  its recipe, which is saved beside it as ``best/recipe.yaml``.

Everything is written to a temporary name and renamed into place. It runs no trial.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from hm3.io.atomic import atomic_dir
from hm3.merging.config import MergeConfig
from hm3.options import RunOptions

log = logging.getLogger("hm3")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states)]


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One flat mapping per finished trial, in trial order."""
    from optuna.trial import TrialState

    rows = []
    for t in finished(study):
        a = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "merge_method": a.get("values", {}).get(
            "merge_method"), "seed": a.get("seed")}  # fmt: skip
        row.update({k: v for k, v in a.get("values", {}).items() if k != "merge_method"})
        for prefix in ("val", "agreement", "similarity", "test"):
            for task, value in (a.get(prefix) or {}).items():
                row[f"{prefix}_{task}"] = value
            if f"{prefix}_average" in a:
                row[f"{prefix}_average"] = a[f"{prefix}_average"]
        row["objective"] = t.value if t.state == TrialState.COMPLETE else None
        row["pruned"] = t.state == TrialState.PRUNED
        row["seconds"] = a.get("seconds")
        rows.append(row)
    return rows


def write_trials_csv(study: Any, out: Path) -> Path:
    rows = trial_rows(study)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    path = out / "trials.csv"
    atomic_write(path, buf.getvalue().encode())
    return path


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def importances(study: Any) -> dict[str, float]:
    """Optuna's fANOVA parameter importances by value key (a Beta quantile counts as its value).

    fANOVA, seeded, not Optuna's default PED-ANOVA: the same trials always give the same plot,
    and its share-of-variance reading is the one the plot's axis names.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    complete = [t for t in finished(study) if t.value is not None]
    if len(complete) < 2 or len({p for t in complete for p in t.params}) < 2:
        return {}
    try:
        raw = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError) as exc:  # e.g. parameters that never vary
        log.warning("parameter importance not computed: %s", exc)
        return {}
    return {name.removesuffix("~q"): float(v) for name, v in raw.items()}


def write_plots(study: Any, out: Path, originals: dict[str, float | None]) -> list[Path]:
    """``search.png`` always (with at least one finished trial), ``importance.png`` when more
    than one parameter was searched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in trial_rows(study) if r["objective"] is not None]
    if not rows:
        return []
    ranks = importances(study)
    keys = [k for k in rows[0] if k not in _NOT_PARAMS and not k.startswith(_SCORES)]
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    x_key = max(ranks, key=ranks.__getitem__) if ranks else (keys[0] if keys else "number")
    written = []
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs, labels = _positions([r.get(x_key) for r in rows])
    ax.scatter(xs, [r["objective"] for r in rows], s=10, alpha=0.5, label="validation")
    tested = [(x, r) for x, r in zip(xs, rows, strict=True) if r.get("test_average") is not None]
    if tested:
        ax.scatter([x for x, _ in tested], [r["objective"] for _, r in tested], s=28,
                   color="black", label="validation (new best)")  # fmt: skip
        ax.scatter([x for x, _ in tested], [r["test_average"] for _, r in tested], marker="*",
                   s=120, color="tab:red", label="test (new best)")  # fmt: skip
    for (name, value), style in zip(originals.items(), ("-", "--"), strict=False):
        if value is not None:
            ax.axhline(value, color="tab:blue", linestyle=style, label=f"originals ({name})")
    if labels:
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(x_key)
    ax.set_ylabel("score (average over tasks)")
    ax.set_title(f"{len(rows)} trials")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    written.append(_save(fig, out / "search.png"))
    if len(ranks) > 1:
        fig = Figure(figsize=(6, 0.5 + 0.4 * len(ranks)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        names = sorted(ranks, key=ranks.__getitem__)
        ax.barh(names, [ranks[n] for n in names])
        ax.set_xlabel("importance (fANOVA, share of variance)")
        fig.tight_layout()
        written.append(_save(fig, out / "importance.png"))
    return written


_NOT_PARAMS = ("number", "seed", "objective", "pruned", "seconds")
_SCORES = ("val_", "agreement_", "similarity_", "test_")


def _positions(values: list[Any]) -> tuple[list[float], list[str]]:
    """Numbers as they are; categories as positions with their names."""
    if all(isinstance(v, int | float) and v is not None for v in values):
        return [float(v) for v in values], []
    labels = sorted({str(v) for v in values})
    return [float(labels.index(str(v))) for v in values], labels


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path


def write_best(config: MergeConfig, out: Path, options: RunOptions) -> Path:
    """``out/best``: the trial's recipe run by the normal merge path, with its ``recipe.yaml``."""
    from hm3.recipe import merge

    best = out / "best"
    with atomic_dir(best, force=True) as tmp:
        built = tmp / ".model"
        merge(
            config, built, device=options.device, allow_pickle=options.allow_pickle,
            progress=False, batch_size=options.batch_size,
        )  # fmt: skip
        for item in built.iterdir():
            shutil.move(str(item), tmp / item.name)
        built.rmdir()
        text = config.to_yaml()
        yaml.safe_load(text)  # a recipe that cannot be read back would be a bug
        (tmp / "recipe.yaml").write_text(text, encoding="utf-8")
    return best
