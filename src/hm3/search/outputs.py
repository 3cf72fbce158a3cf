"""What a search leaves in ``--out``: ``trials.csv``, ``search.png``, ``importance.png``, ``best/``.

- ``trials.csv``: one row per finished trial (complete or pruned), from the study's storage:
  number, merge_method, seed, every parameter's value (empty where the trial did not draw
  it), validation score per task and average (F1, or agreement and probability similarity
  with ``--objective agreement``), test score when taken, the objective, pruned, seconds, in
  that order whichever trial drew what. Rewritten atomically after every trial.
- ``search.png``: validation scores (dots; bold where they triggered a test) and test scores
  (stars) against the parameter that mattered most, the originals' averages as horizontal
  lines (the paper's Figure 3). ``importance.png``: fANOVA's importances, when more than one
  parameter was searched, of those all complete trials drew (it names the others).
- ``best/``: the best trial rebuilt by :func:`hm3.recipe.merge` (what ``hm3 merge`` runs) from
  its recipe, saved beside it as ``best/recipe.yaml``, whose first line, a comment, names the
  trial and the study's fingerprint: a ``best/`` no longer the study's best is rewritten.
- ``study.json``: with ``--storage``, which storage and study the ``--out`` is a worker's, so
  that a worker coming back to it joins, and another search does not overwrite it.

Everything is written to a temporary name and renamed into place. It runs no trial.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from hm3.io.atomic import atomic_dir, write_file
from hm3.merging.config import MergeConfig
from hm3.options import RunOptions
from hm3.search.data import SLICES
from hm3.search.space import SearchSpace

log = logging.getLogger("hm3")


def finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One mapping per finished trial, in trial order: every :func:`columns` key, or None."""
    from optuna.trial import TrialState

    rows = []
    for t in finished(study):
        a = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "merge_method": None, "seed": a.get("seed")}
        row.update(a.get("values", {}))  # in any order: columns() orders them
        row.update({f"{p}{k}": v for p in _SCORES for k, v in (a.get(p[:-1]) or {}).items()})
        row.update({k: v for k, v in a.items() if k.startswith(_SCORES) and k.endswith("_average")})
        done = t.state == TrialState.COMPLETE  # else pruned
        row.update(objective=t.value if done else None, pruned=not done, seconds=a.get("seconds"))
        rows.append(row)
    keys = columns(rows)
    return [{k: row.get(k) for k in keys} for row in rows]


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The rows' keys as docs/design.md orders them, whichever trial drew what: the parameters
    in the space's order (per model: by task), each score per task then its average."""
    seen = list(dict.fromkeys(k for row in rows for k in row))
    order = (*_HEAD, *_PARAMETERS, *_SCORES, *_TAIL)  # merge_method (twice): at its first

    def rank(key: str) -> tuple[Any, ...]:  # an unknown parameter: after the known, by name
        group = next((p for p in _SCORES if key.startswith(p)), key.partition("[")[0])
        at = order.index(group) if group in order else order.index(_SCORES[0]) - 0.5
        return (at, group, key == f"{group}average", seen.index(key))

    return sorted(seen, key=rank)


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
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    path = out / "trials.csv"
    write_file(path, buf.getvalue().encode())
    return path


def importances(study: Any) -> dict[str, float]:
    """Optuna's fANOVA parameter importances by value key (a Beta quantile counts as its value).

    fANOVA, seeded, not Optuna's default PED-ANOVA: the same trials always give the same plot,
    and its share-of-variance reading is the one the plot's axis names. It ranks only what every
    complete trial drew (not the density of a method list with ``tsv``); :func:`write_plots`
    notes the others.
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
    from matplotlib.figure import Figure  # it saves through Agg: no canvas to attach

    rows = [r for r in trial_rows(study) if r["objective"] is not None]
    if not rows:
        return []
    originals = reference_lines(originals)
    ranks = importances(study)
    drawn = {p.removesuffix("~q") for t in finished(study) if t.value is not None for p in t.params}
    missing = sorted(drawn - set(ranks)) if ranks else []  # drawn by only some complete trials
    note = f"not ranked (drawn by only some trials): {', '.join(missing)}" * bool(missing)
    if note:
        log.warning("importance.png: %s", note)
    keys = [k for k in rows[0] if k not in _NOT_PARAMS and not k.startswith(_SCORES)]
    keys = [k for k in keys if all(r.get(k) is not None for r in rows)]  # no "None" on the axis
    x_key = max(ranks, key=ranks.__getitem__) if ranks else (keys[0] if keys else "number")
    fig = Figure(figsize=(7, 4.5))
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
    written = [_save(fig, out / "search.png")]
    if ranks and len(ranks) + len(missing) > 1:
        fig = Figure(figsize=(6, 0.5 + 0.4 * len(ranks) + 0.3 * bool(note)))
        ax = fig.add_subplot()
        names = sorted(ranks, key=ranks.__getitem__)
        ax.barh(names, [ranks[n] for n in names])
        ax.set_xlabel("importance (fANOVA, share of variance)")
        ax.set_title(note, fontsize=8, wrap=True)
        fig.tight_layout()
        written.append(_save(fig, out / "importance.png"))
    return written


def reference_lines(originals: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The originals' average per sample (``val``, ``test``) by its legend label."""
    return {f"originals ({name})": scores.get("average") for name, scores in originals.items()}


_HEAD, _TAIL = ("number", "merge_method", "seed"), ("objective", "pruned", "seconds")
_NOT_PARAMS = ("number", "seed", *_TAIL)
_SCORES = ("val_", "agreement_", "similarity_", "test_")
_PARAMETERS = [f.alias or name for name, f in SearchSpace.model_fields.items()]


def _positions(values: list[Any]) -> tuple[list[float], list[str]]:
    """Numbers as they are; categories as positions with their names."""
    if all(isinstance(v, int | float) and v is not None for v in values):
        return [float(v) for v in values], []
    labels = sorted({str(v) for v in values})
    return [float(labels.index(str(v))) for v in values], labels


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_file(path, buf.getvalue())
    return path


def write_best(config: MergeConfig, out: Path, options: RunOptions, trial: str) -> Path:
    """``out/best``: the trial's recipe run by the normal merge path, with its ``recipe.yaml``
    (``trial``, from :func:`best_label`, is its first line's comment)."""
    from hm3.recipe import merge

    best = out / "best"
    with atomic_dir(best, force=True) as tmp:
        built = tmp / ".model"
        # hm3 merge's own batch size: alignment pads by batch, so another one would change
        # the heads' last bits, and `hm3 merge best/recipe.yaml` would not rebuild best/
        merge(config, built, device=options.device, allow_pickle=options.allow_pickle,
              progress=False)  # fmt: skip
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
    write_file(out / STUDY_FILE, (json.dumps(data, indent=1) + "\n").encode())


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
