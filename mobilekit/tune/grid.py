"""The λ x epochs grid (Single-Path NAS, Sec. VII-B, Fig. 9 right): eq. 19 for every pair of a tuned value and
a search budget in epochs, run by Optuna's :class:`~optuna.samplers.GridSampler`, drawn as a heat-map. It shows
whether cheap low-epoch evaluations rank λ the way full-budget ones do (the paper found that they do not:
large λ reaches the target early, then overshoots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from mobilekit import safewrite
from mobilekit.tune.params import ParamSpec
from mobilekit.tune.pruners import Fidelity

EPOCHS = "epochs"


def grid_params(params: tuple[ParamSpec, ...], fidelity: Fidelity) -> list[ParamSpec]:
    """The tuned parameters plus the search epochs (every integer from ``fidelity.min_epochs`` to
    ``fidelity.max_epochs``)."""
    return [*params, ParamSpec(EPOCHS, EPOCHS, "int", fidelity.min_epochs, fidelity.max_epochs)]


def grid_space(params: list[ParamSpec], points: int) -> dict[str, list[Any]]:
    """Optuna GridSampler search space: ``points`` values per tuned range, every epoch count."""
    return {p.name: (list(range(int(p.low), int(p.high) + 1)) if p.name == EPOCHS else p.grid(points))
            for p in params}


def grid_sampler(params: list[ParamSpec], points: int, seed: int | None = None) -> optuna.samplers.GridSampler:
    return optuna.samplers.GridSampler(grid_space(params, points), seed=seed)


def grid_size(params: list[ParamSpec], points: int) -> int:
    size = 1
    for values in grid_space(params, points).values():
        size *= len(values)
    return size


def plot_grid(study: optuna.Study, param: str, path: str | Path, title: str = "") -> Path:
    """Heat-map of eq. 19: ``param`` values on x (log scale positions when they are geometric), search epochs on
    y; a cell is the mean over trials with that pair (other tuned parameters averaged out); blank = not run yet."""
    import numpy as np

    from mobilekit.tune.outputs import pyplot

    plt = pyplot()
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if param in t.params and EPOCHS in t.params]
    xs = sorted({t.params[param] for t in done})
    ys = sorted({t.params[EPOCHS] for t in done})
    grid = np.full((len(ys), len(xs)), np.nan)
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            values = [t.value for t in done if t.params[param] == x and t.params[EPOCHS] == y]
            if values:
                grid[iy, ix] = float(np.mean(values))
    fig, ax = plt.subplots(figsize=(1.2 * max(4, len(xs)) + 2, 0.6 * max(4, len(ys)) + 1.5))
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xs)), [f"{x:.3g}" if isinstance(x, float) else str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    for iy in range(len(ys)):
        for ix in range(len(xs)):
            if not np.isnan(grid[iy, ix]):
                ax.text(ix, iy, f"{grid[iy, ix]:.3f}", ha="center", va="center", fontsize=7, color="white")
    ax.set_xlabel(param)
    ax.set_ylabel("search epochs (fidelity)")
    fig.colorbar(image, ax=ax, label="eq. 19: Acc · (R/R_T)^w")
    ax.set_title(title or f"eq. 19 over {param} x epochs")
    fig.tight_layout()
    path = Path(path)
    safewrite.save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
