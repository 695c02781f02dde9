"""One trial = one search: the Optuna objective. Suggests the tuned options, runs
:func:`mobilekit.search.run_search` in the trial's own run folder (resumed when a killed trial is retried),
reports eq. 19 after every search epoch for the pruner, and returns eq. 19 or the multi-objective values."""

from __future__ import annotations

from typing import Any

import optuna

from mobilekit.errors import MobilekitError
from mobilekit.tune.config import TuneConfig
from mobilekit.tune.objective import EpochRewards, summary_latency_ms, summary_reward
from mobilekit.tune.storage import WORKER_ATTR, retried_trial_number, worker_identity

# summary keys copied onto each trial (its user attributes, the CSV's columns)
SUMMARY_ATTRS = ("val_accuracy", "test_accuracy", "predicted_ms", "derived_ms", "measured_ms", "target_ms",
                 "lambda_final", "within_window", "arch")


def objective_values(summary: dict[str, Any], objectives: tuple[str, ...], latency: str) -> list[float]:
    """The study's objective values for a finished search (reward = eq. 19, accuracy = validation accuracy,
    latency = R in ms per ``latency``)."""
    value = {"reward": lambda: summary_reward(summary, latency),
             "accuracy": lambda: float(summary["val_accuracy"]),
             "latency": lambda: summary_latency_ms(summary, latency)}
    return [value[name]() for name in objectives]


class TrialRunner:
    """The objective ``study.optimize`` calls; picklable, so local worker processes and Ray tasks get a copy."""

    def __init__(self, config: TuneConfig, fixed: list[Any] | None = None) -> None:
        self.config = config
        self.fixed = fixed  # grid mode: the grid parameters (ParamSpec list) replacing config.params

    def options(self, trial: optuna.Trial) -> dict[str, Any]:
        """Flat search options of this trial: shared overrides, then the suggested values."""
        options = self.config.trial_overrides()
        for spec in self.fixed or self.config.params:
            options[spec.option] = spec.suggest(trial)
        return options

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        from mobilekit.search import make_config, run_search

        cfg = self.config
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        original = retried_trial_number(trial.study._storage.get_trial(trial._trial_id))
        folder = cfg.trial_folder(trial.number if original is None else original)
        options = self.options(trial)
        trial.set_user_attr("run_folder", str(folder))
        try:
            search_config = make_config(cfg.recipe, **options, out=str(folder), resume=True)
            trial.set_user_attr("target_ms", search_config.target_ms)

            def report(value: float, epoch: int) -> None:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {epoch} epoch(s), eq. 19 = {value:.4f}")

            on_step = None if cfg.multi_objective else EpochRewards(search_config.target_ms, report)
            summary = run_search(search_config, progress=False, on_step=on_step)
            if on_step is not None:
                on_step.finish(trial.report)        # the search is done: record its last epoch, prune nothing
            for key in SUMMARY_ATTRS:
                if summary.get(key) is not None:
                    trial.set_user_attr(key, summary[key])
            values = objective_values(summary, cfg.objectives, cfg.latency)
        except MobilekitError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("latency_ms", summary_latency_ms(summary, cfg.latency))
        return values[0] if len(values) == 1 else values
