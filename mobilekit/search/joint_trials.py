"""Multi-trial baselines over AutoHAS's joint space (the paper's Table 3: random search and Bayesian optimisation at
the same budget): each trial is an architecture in the latency window plus a learning rate and a weight decay from
the range of AutoHAS's bases, trained from scratch for ``trial_epochs``; the best validation accuracy wins.

A method supplies ``propose(ctx, i, history) -> (architecture, lr, weight_decay, extra)`` (``extra``: JSON-able
facts kept with the trial's result); :func:`run_trials` trains the
trials one after another, resumable inside the trial a checkpoint was taken in (the finished trials' results live
in the phase state, so a proposer that depends only on the history and the trial index repeats itself exactly).
Budget: ``trials x trial_epochs`` epochs of training; with the defaults (``trial_epochs = epochs // trials``) that is
the number of weight steps of one AutoHAS search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.autohas import multipliers
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters
from mobilekit.search.runfolder import save_weights
from mobilekit.search.single_path import arch_summary
from mobilekit.search.training import SearchContext, TrainPhase, evaluate
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
    cfg, engine = ctx.config, ctx.engine
    resumed_at = -1
    if ctx.checkpoint is not None and str(ctx.checkpoint[1].get("phase", "")).startswith("proxy-"):
        resumed_at = int(ctx.checkpoint[1]["phase"].split("-", 1)[1])
    state: dict[str, Any] = {"results": [], "elapsed_s": 0.0}
    if resumed_at >= 0:
        state.update(ctx.checkpoint[1].get("state", {}))
    best_state = None
    for i in range(cfg.trials):
        if i < resumed_at:
            continue
        arch, lr, weight_decay, extra = propose(ctx, i, state["results"][:i])
        hyperparameters = TrainingHyperparameters(lr, cfg.lr_schedule, weight_decay, cfg.optimizer, cfg.augment, source)
        torch.manual_seed(cfg.seed * 1000 + i)
        model = MobileNet(arch)
        predicted = ctx.latency_model.lookup_ms(arch)
        phase = TrainPhase(model=model, hyperparameters=hyperparameters, state=state,
                           tags={"trial": i, "arch": arch.to_string(), "runtime_hard_ms": predicted,
                                 "decisions": arch_summary(arch), "weight_decay": weight_decay},
                           **ctx.phase_kwargs(f"proxy-{i}", epochs=trial_epochs(cfg)))
        start = phase.restore(ctx.checkpoint if i == resumed_at else None)
        phase.elapsed_s = float(state.get("elapsed_s", 0.0)) if i != resumed_at else phase.elapsed_s
        phase.run_loop(start)
        accuracy = evaluate(model, ctx.splits.val, engine=engine, workers=cfg.workers)
        state["elapsed_s"] = phase.elapsed_s
        results = state["results"]
        results.append({"trial": i, "arch": arch.to_string(), "predicted_ms": predicted, "lr": lr,
                        "weight_decay": weight_decay, "val_accuracy": accuracy, **extra})
        if accuracy > max((r["val_accuracy"] for r in results[:-1]), default=-1.0):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if engine.is_writer:
                save_weights(model, ctx.run.path(BEST_WEIGHTS))
    best = max(state["results"], key=lambda r: (r["val_accuracy"], -r["trial"]))
    arch = Architecture.from_string(ctx.train_space, best["arch"])
    model = engine.place(MobileNet(arch))
    if best_state is None or best["trial"] < max(resumed_at, 0):
        engine.barrier()
        best_state = torch.load(ctx.run.path(BEST_WEIGHTS), weights_only=True, map_location=engine.device)
    model.load_state_dict(best_state)
    hyperparameters = TrainingHyperparameters(best["lr"], cfg.lr_schedule, best["weight_decay"], cfg.optimizer,
                                              cfg.augment, source)
    steps = sum(1 for r in ctx.run.records() if str(r.get("phase", "")).startswith("proxy-"))
    details = {"lambda_final": None, "search_steps": steps, "trials": state["results"]}
    return SearchOutcome(arch, model, float(state["elapsed_s"]), hyperparameters, arch, [], details,
                         recalibrate_bn=False)
