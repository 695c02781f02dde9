"""Optuna samplers by name: one registry, so the study never knows which one it has.

Single objective: ``gp`` (Gaussian-process Bayesian optimisation, the paper's best solver in Fig. 9 left),
``tpe`` (tree-structured Parzen estimator), ``random``. Multi-objective: ``nsga2`` (NSGA-II), ``motpe``
(multi-objective TPE), ``random``. Model-based samplers start with ``startup_trials`` random trials.
"""

from __future__ import annotations

from typing import Callable

import optuna

from mobilekit.errors import ConfigError


def _gp(seed: int | None, startup_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)


def _tpe(seed: int | None, startup_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)


def _random(seed: int | None, startup_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _nsga2(seed: int | None, startup_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, startup_trials))


SINGLE_OBJECTIVE: dict[str, Callable[[int | None, int], optuna.samplers.BaseSampler]] = {
    "gp": _gp, "tpe": _tpe, "random": _random}
MULTI_OBJECTIVE: dict[str, Callable[[int | None, int], optuna.samplers.BaseSampler]] = {
    "nsga2": _nsga2, "motpe": _tpe, "random": _random}


def default_startup_trials(trials: int) -> int:
    """Random trials before a model-based sampler takes over: a third of the budget, between 2 and 10."""
    return max(2, min(10, trials // 3))


def make_sampler(name: str, *, seed: int | None = None, startup_trials: int = 10,
                 multi_objective: bool = False) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (see the module docstring).

    Raises:
        ConfigError: the name is unknown for this mode.
    """
    registry = MULTI_OBJECTIVE if multi_objective else SINGLE_OBJECTIVE
    if name not in registry:
        mode = "multi-objective" if multi_objective else "single-objective"
        raise ConfigError(f"--sampler {name!r} is not a {mode} sampler: use one of {', '.join(registry)}")
    return registry[name](seed, startup_trials)
