"""Bayesian optimisation over AutoHAS's joint space with Optuna's TPE sampler (the paper's Table 3 "BO"): per trial a
type at every searchable position, a learning rate and a weight decay (log-uniform over the range of AutoHAS's
bases) are suggested from the finished trials' validation accuracies; the suggested architecture is moved into
[0.9 T, T] by the engine's repair before training (the repaired one is what is trained and reported). Each trial
trains from scratch (:mod:`~mobilekit.search.methods.joint_trials`).

The study is rebuilt for every trial from the finished trials (``optuna.trial.create_trial``) with a sampler seeded
by (seed, trial), so a resumed run proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import optuna

from mobilekit.search.budget import WINDOW, repair_to_window
from mobilekit.search.methods.joint_trials import Options, hyperparameter_ranges, run_trials
from mobilekit.search.outcome import SearchOutcome
from mobilekit.search.training import SearchContext
from mobilekit.space import Architecture

LATENCY_MODEL = "lookup"
SUMMARY = "TPE joint baseline (Optuna): architecture + lr + weight decay, repaired into [0.9T, T], trained per trial"

__all__ = ["LATENCY_MODEL", "Options", "SUMMARY", "distributions", "propose", "search"]


def distributions(ctx: SearchContext) -> dict[str, optuna.distributions.BaseDistribution]:
    """One categorical per searchable position (its allowed type names), lr and weight decay log-uniform."""
    ranges = hyperparameter_ranges(ctx.config)
    space = {f"layer{p.index}": optuna.distributions.CategoricalDistribution(
        [t.name for t in ctx.latency_model.allowed_types(p)]) for p in ctx.train_space.searchable_positions}
    space["lr"] = optuna.distributions.FloatDistribution(*ranges["lr"], log=True)
    space["weight_decay"] = optuna.distributions.FloatDistribution(*ranges["weight_decay"], log=True)
    return space


def propose(ctx: SearchContext, i: int, history: list[dict[str, Any]]) -> tuple[Architecture, float, float, dict[str, Any]]:
    cfg = ctx.config
    dists = distributions(ctx)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed * 1000 + i))
    study.add_trials([optuna.trial.create_trial(params=r["suggested"], distributions=dists, value=r["val_accuracy"])
                      for r in history])
    trial = study.ask(dists)
    chosen = {int(name[5:]): value for name, value in trial.params.items() if name.startswith("layer")}
    types = {p.index: {t.name: t for t in p.candidates} for p in ctx.train_space.searchable_positions}
    suggested = Architecture(ctx.train_space, tuple(types[p.index][chosen[p.index]] if p.searchable else
                                                    p.candidates[0] for p in ctx.train_space.positions))
    arch, _ = repair_to_window(suggested, ctx.latency_model, WINDOW[0] * cfg.target_ms, WINDOW[1] * cfg.target_ms,
                               lambda position, layer_type: 0.0)
    return arch, trial.params["lr"], trial.params["weight_decay"], {"suggested": trial.params}


def search(ctx: SearchContext) -> SearchOutcome:
    return run_trials(ctx, propose, "tpe search")
