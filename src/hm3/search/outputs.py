"""What a search leaves in ``--out``: ``trials.csv``, ``search.png``, ``importance.png``, ``best/``.

- ``trials.csv``: one row per finished trial (complete or pruned), from the study's storage:
  number, merge_method, seed, every parameter's value, validation score per task and average
  (F1, or agreement and probability similarity with ``--objective agreement``, whichever were
  computed), test score when taken, the objective, pruned, seconds. Rewritten atomically after
  every trial.
- ``search.png``: validation scores (dots; bold where they triggered a test) and test scores
  (stars) against the parameter that mattered most, the originals' averages as horizontal
  lines (the paper's Figure 3). ``importance.png``: Optuna's parameter importances, when more
  than one parameter was searched.
- ``best/``: the best trial rebuilt by :func:`hm3.recipe.merge` (what ``hm3 merge`` runs) from
  its recipe, which is saved beside it as ``best/recipe.yaml``; the recipe's first line, a
  comment, names the trial and the study's fingerprint, so a ``best/`` that is no longer the
  study's best is known and rewritten.
- ``study.json``: with ``--storage``, which storage and study the ``--out`` is a worker's, so
  that a worker coming back to it joins, and another search does not overwrite it.

Everything is written to a temporary name and renamed into place. It runs no trial.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from hm3.io.atomic import atomic_dir
from hm3.merging.config import MergeConfig
from hm3.options import RunOptions
from hm3.search.data import SLICES

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


def best_text(study: Any) -> str:
    """The study's best so far, as the progress bar and the log lines show it."""
    try:
        trial = study.best_trial
    except ValueError:
        return "-"
    test = trial.user_attrs.get("test_average")
    shown = f"{trial.value:.4f} (#{trial.number})"
    return shown + (f", test {test:.4f}" if test is not None else "")


def trial_line(
    study: Any, number: int, done: int, total: int, best: str | None = None
) -> str | None:
    """One finished trial as a log line (off a terminal, where no bar is drawn); ``None`` for one
    that was not counted (a skipped draw, which warns on its own, or a surplus one). ``best``:
    :func:`best_text` where the caller has it already (each is a read of the storage)."""
    from optuna.trial import TrialState

    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return None
    if trial.state == TrialState.COMPLETE:
        what = f"scored {trial.value:.4f}"
    else:  # reported after each slice of the validation rows, stage 0 first
        what = f"pruned after {max(trial.intermediate_values, default=-1) + 1}/{SLICES} of its rows"
    best = best_text(study) if best is None else best
    return f"trial {number} {what}; best {best}; {done} of {total} trials done"


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


def write_plots(study: Any, out: Path, originals: dict[str, dict[str, Any]]) -> list[Path]:
    """``search.png`` always (with at least one finished trial), ``importance.png`` when more
    than one parameter was searched. ``originals``: the originals' scores per sample."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in trial_rows(study) if r["objective"] is not None]
    if not rows:
        return []
    originals = reference_lines(originals)
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
    for (label, value), style in zip(originals.items(), ("-", "--"), strict=False):
        if value is not None:
            ax.axhline(value, color="tab:blue", linestyle=style, label=label)
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


def reference_lines(originals: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The originals' average per sample (``val``, ``test``) by its legend label."""
    return {f"originals ({name})": scores.get("average") for name, scores in originals.items()}


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


def write_best(config: MergeConfig, out: Path, options: RunOptions, trial: str) -> Path:
    """``out/best``: the trial's recipe run by the normal merge path, with its ``recipe.yaml``
    (``trial``, from :func:`best_label`, is its first line's comment)."""
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
        text = f"# {trial}\n{config.to_yaml().rstrip()}\n"
        yaml.safe_load(text)  # a recipe that cannot be read back would be a bug
        (tmp / "recipe.yaml").write_text(text, encoding="utf-8")
    return best


def best_label(number: int, fingerprint: str) -> str:
    return f"hm3 search: trial {number} of the study with fingerprint {fingerprint}"


def written_best(out: Path) -> str | None:
    """The :func:`best_label` of ``out/best``, if a search wrote it."""
    try:
        with (out / "best" / "recipe.yaml").open(encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return None
    return first[2:].strip() if re.match(r"# hm3 search: trial \d+ ", first) else None


STUDY_FILE = "study.json"
_OURS = ("trials.csv", "search.png", "importance.png", "best", STUDY_FILE)


def storage_label(url: str) -> str:
    """A shared storage as ``study.json`` names it: a journal's absolute path, or a URL
    without its credentials."""
    if "://" not in url:
        return str(Path(url).resolve())
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def write_study_file(out: Path, url: str, study: str) -> None:
    data = {"storage": storage_label(url), "study": study}
    atomic_write(out / STUDY_FILE, (json.dumps(data, indent=1) + "\n").encode())


def foreign(out: Path, url: str, study: str) -> str | None:
    """What in ``out`` is not the outputs of ``study`` in the shared storage ``url``, or
    ``None`` (``out`` is absent, empty, or that study's worker's). An ``--out`` written before
    ``study.json`` existed counts as the study's when it holds only search outputs."""
    if not out.is_dir():
        return None
    names = sorted(p.name for p in out.iterdir())
    if (out / STUDY_FILE).is_file():
        try:
            data = json.loads((out / STUDY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if data != {"storage": storage_label(url), "study": study}:
            return f"the outputs of another study ({STUDY_FILE})"
    if "study.journal" in names:
        return "another search's own study (study.journal)"
    others = [n for n in names if n not in _OURS and not re.match(r"\..*\.(tmp|old)-", n)]
    return f"other files ({', '.join(others[:3])})" if others else None
