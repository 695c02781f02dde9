"""Multi-trial baselines over AutoHAS's joint space (the paper's Table 3: random search and Bayesian optimisation at
the same budget): each trial is an architecture in the latency window plus a learning rate and a weight decay from
the range of AutoHAS's bases, trained from scratch for ``trial_epochs``; the best validation accuracy wins.

A method supplies ``propose(ctx, i, history) -> (architecture, lr, weight_decay, extra)`` (``extra``: JSON-able
facts kept with the trial's result); :func:`run_trials` trains the trials with the loop every multi-trial
baseline shares (:mod:`mobilekit.search.methods.proxy_trials`: resumable inside a trial; a proposer that depends only on
the history and the trial index repeats itself exactly).
Budget: ``trials x trial_epochs`` epochs of training; with the defaults (``trial_epochs = epochs // trials``) that is
the number of weight steps of one AutoHAS search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mobilekit.search.methods import proxy_trials
from mobilekit.search.methods.autohas import multipliers
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters
from mobilekit.search.methods.proxy_trials import Trial
from mobilekit.search.training import SearchContext
from mobilekit.space import Architecture

BEST_WEIGHTS = "best_trial.pt"
Propose = Callable[[SearchContext, int, list[dict[str, Any]]], tuple[Architecture, float, float, dict[str, Any]]]


@dataclass
class Options:
    """Joint-baseline settings (recipe sections ``[search.random-has]``, ``[search.tpe]``)."""

    trials: int = option(4, "trials (architecture + learning rate + weight decay), each trained from scratch", ge=1)
    trial_epochs: int | None = option(None, "epochs per trial (default: epochs // trials)", ge=1)
    multipliers: tuple[str, ...] = option(("0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10"),
                                          "hyper-parameter range = default x [min, max] of these")
    wd_default: float = option(1e-4, "weight decay the range multiplies", gt=0)


def trial_epochs(config: Any) -> int:
    return max(1, config.epochs // config.trials) if config.trial_epochs is None else config.trial_epochs


def hyperparameter_ranges(config: Any) -> dict[str, tuple[float, float]]:
    """(low, high) of the learning rate and the weight decay: the span of AutoHAS's bases."""
    m = multipliers(config.method_options)
    return {"lr": (config.lr * min(m), config.lr * max(m)), "weight_decay": (config.wd_default * min(m),
                                                                             config.wd_default * max(m))}


def run_trials(ctx: SearchContext, propose: Propose, source: str) -> SearchOutcome:
    """Train ``trials`` proposals and return the best (its trained weights seed the final training when
    ``final_init`` is "inherit"; its lr and weight decay are the hyper-parameters of the final training)."""
    cfg = ctx.config

    def trial(ctx: SearchContext, i: int, history: list[dict[str, Any]]) -> Trial:
        arch, lr, weight_decay, extra = propose(ctx, i, history)
        hyperparameters = TrainingHyperparameters(lr, cfg.lr_schedule, weight_decay, cfg.optimizer, cfg.augment, source)
        return Trial(arch, hyperparameters, {"lr": lr, "weight_decay": weight_decay, **extra},
                     {"weight_decay": weight_decay})

    return proxy_trials.run_trials(ctx, cfg.trials, trial_epochs(cfg), trial, key="trial", best_weights=BEST_WEIGHTS)
