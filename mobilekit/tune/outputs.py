"""What a study leaves in its output folder: ``trials.csv`` (every trial), ``best.json`` (the best trial's
settings and run folder, or the Pareto front), ``history.png`` (best eq. 19 so far over trials, one line per
single-objective study in the storage, e.g. one per sampler: Single-Path NAS Fig. 9 left)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from mobilekit import safewrite
from mobilekit.jsonio import write_json_atomic

SAMPLER_ATTR = "sampler"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return str(value)
    return "" if value is None else value


def write_trials_csv(study: optuna.Study, objectives: tuple[str, ...], path: str | Path) -> Path:
    """One row per trial: number, state, objective values, parameters, the search summary's figures, duration."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for t in trials for name in t.params})
    attrs = sorted({name for t in trials for name in t.user_attrs})
    header = ["number", "state", *objectives, *(f"param_{p}" for p in params), *attrs, "duration_s", "started"]
    path = Path(path)
    with safewrite.atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for t in trials:
            values = t.values if t.values is not None else [None] * len(objectives)
            writer.writerow([t.number, t.state.name, *map(_cell, values), *(_cell(t.params.get(p)) for p in params),
                             *(_cell(t.user_attrs.get(a)) for a in attrs),
                             "" if t.duration is None else round(t.duration.total_seconds(), 2),
                             "" if t.datetime_start is None else t.datetime_start.isoformat(timespec="seconds")])
    return path


def trial_record(trial: optuna.trial.FrozenTrial, options: dict[str, str]) -> dict[str, Any]:
    """A finished trial as JSON: number, objective values, tuned values by search option, run folder, figures."""
    return {
        "number": trial.number,
        "values": trial.values,
        "params": dict(trial.params),
        "search_options": {options.get(name, name): value for name, value in trial.params.items()},
        "run_folder": trial.user_attrs.get("run_folder"),
        **{k: v for k, v in trial.user_attrs.items() if k not in ("run_folder", "worker")},
    }


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def write_best(study: optuna.Study, options: dict[str, str], path: str | Path, extra: dict[str, Any]) -> dict[str, Any]:
    """``best.json``: the best trial (single objective) or the Pareto front (several), with the study's counts.
    ``options`` maps parameter names to search options (``lambda`` -> ``lambda_init``)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    result: dict[str, Any] = {"study": study.study_name, "trials": state_counts(study), **extra}
    if complete and len(study.directions) == 1:
        result["best"] = trial_record(study.best_trial, options)
    elif complete:
        from mobilekit.tune.multi_objective import pareto_trials

        result["pareto_front"] = [trial_record(t, options) for t in pareto_trials(study)]
    write_json_atomic(path, result)
    return result


def best_so_far(study: optuna.Study) -> list[float]:
    """Best eq. 19 after each complete trial, in trial order (a maximised single objective)."""
    best, curve = -math.inf, []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        best = max(best, t.value)
        curve.append(best)
    return curve


def history_series(storage: optuna.storages.BaseStorage) -> dict[str, list[float]]:
    """``"study (sampler)" -> best-so-far curve`` for every single-objective study in ``storage``."""
    series = {}
    for summary in optuna.get_all_study_summaries(storage):
        if len(summary.directions) != 1 or summary.directions[0] != optuna.study.StudyDirection.MAXIMIZE:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        curve = best_so_far(study)
        if curve:
            sampler = summary.user_attrs.get(SAMPLER_ATTR, "?")
            series[f"{summary.study_name} ({sampler})"] = curve
    return series


def plot_history(series: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Best objective so far over complete trials, one line per label (Single-Path NAS, Fig. 9 left)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, curve in series.items():
        ax.step(range(1, len(curve) + 1), curve, where="post", marker="o", ms=3, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("complete trials")
    ax.set_ylabel("best eq. 19 so far: Acc · (R/R_T)^w")
    ax.set_title(title or "best objective over trials")
    if series:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    safewrite.save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
