"""Multi-objective mode (``--objectives accuracy,latency``): NSGA-II or MOTPE over validation accuracy
(maximised) and R in ms (minimised), e.g. with the target itself tuned (``--param target_ms:lin:60:100``) so one
study spans many targets. Optuna keeps the Pareto front (``study.best_trials``); this module draws it."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from mobilekit import safewrite


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated complete trials, sorted by their first objective."""
    return sorted(study.best_trials, key=lambda t: t.values[0])


def plot_pareto(study: optuna.Study, objectives: tuple[str, ...], path: str | Path, title: str = "") -> Path:
    """Every complete trial (grey) and the Pareto front (red, joined), first objective on x, second on y."""
    from mobilekit.tune.outputs import pyplot

    plt = pyplot()
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = pareto_trials(study)
    label = {"accuracy": "validation accuracy", "latency": "R (ms)", "reward": "eq. 19"}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], s=18, color="0.6", label="trials")
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", color="tab:red", ms=5,
            label="Pareto front")
    for t in front:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(label.get(objectives[0], objectives[0]))
    ax.set_ylabel(label.get(objectives[1], objectives[1]))
    ax.set_title(title or f"Pareto front ({len(front)} of {len(done)} trials)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    safewrite.save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
