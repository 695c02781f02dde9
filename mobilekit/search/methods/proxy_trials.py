"""The multi-trial loop the baselines share (random search, and random / TPE over AutoHAS's joint space): train a
sequence of proposed networks from scratch for a few epochs each and keep the one with the best validation
accuracy.

A method supplies ``propose(ctx, i, history) -> Trial`` (``history``: the finished trials' result rows); the loop
trains the trials one after another and is resumable inside the trial a checkpoint was taken in (the finished
trials' rows live in the phase state, so a proposer that depends only on the history and the index repeats itself
exactly). The best trial's trained weights are kept in the run folder so that a resumed run can hand them over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters, arch_summary
from mobilekit.search.runfolder import save_weights
from mobilekit.search.training import SearchContext, TrainPhase, evaluate
from mobilekit.space import Architecture


@dataclass
class Trial:
    """One proposal: the architecture, the hyper-parameters to train it with, JSON-able ``facts`` kept in its
    result row and ``tags`` added to its metric records."""

    arch: Architecture
    hyperparameters: TrainingHyperparameters
    facts: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)


Propose = Callable[[SearchContext, int, list[dict[str, Any]]], Trial]


def run_trials(ctx: SearchContext, count: int, epochs: int, propose: Propose, *, key: str,
               best_weights: str) -> SearchOutcome:
    """Train ``count`` proposals for ``epochs`` each; return the best as the outcome (its trained weights seed the
    final training when ``final_init`` is "inherit", its hyper-parameters train it). Result rows (``details[key +
    "s"]``) hold ``{key: i, "arch", "predicted_ms", **facts, "val_accuracy"}``; ``best_weights`` names the file in
    the run folder that keeps the best weights so far."""
    cfg, engine = ctx.config, ctx.engine
    resumed_at = -1
    if ctx.checkpoint is not None and str(ctx.checkpoint[1].get("phase", "")).startswith("proxy-"):
        resumed_at = int(ctx.checkpoint[1]["phase"].split("-", 1)[1])
    state: dict[str, Any] = {"results": [], "elapsed_s": 0.0}
    if resumed_at >= 0:
        state.update(ctx.checkpoint[1].get("state", {}))
    best_state = None
    for i in range(max(resumed_at, 0), count):
        trial = propose(ctx, i, state["results"][:i])
        torch.manual_seed(cfg.seed * 1000 + i)
        model = MobileNet(trial.arch)
        predicted = ctx.latency_model.lookup_ms(trial.arch)
        phase = TrainPhase(model=model, hyperparameters=trial.hyperparameters, state=state,
                           tags={key: i, "arch": trial.arch.to_string(), "runtime_hard_ms": predicted,
                                 "decisions": arch_summary(trial.arch), **trial.tags},
                           **ctx.phase_kwargs(f"proxy-{i}", epochs=epochs))
        start = phase.restore(ctx.checkpoint if i == resumed_at else None)
        phase.elapsed_s = float(state.get("elapsed_s", 0.0)) if i != resumed_at else phase.elapsed_s
        phase.run_loop(start)
        accuracy = evaluate(model, ctx.splits.val, engine=engine, workers=cfg.workers)
        state["elapsed_s"] = phase.elapsed_s
        results = state["results"]
        results.append({key: i, "arch": trial.arch.to_string(), "predicted_ms": predicted, **trial.facts,
                        "val_accuracy": accuracy})
        if accuracy > max((r["val_accuracy"] for r in results[:-1]), default=-1.0):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_hyperparameters = trial.hyperparameters
            if engine.is_writer:
                save_weights(model, ctx.run.path(best_weights))
    best = max(state["results"], key=lambda r: (r["val_accuracy"], -r[key]))
    arch = Architecture.from_string(ctx.train_space, best["arch"])
    model = engine.place(MobileNet(arch))
    if best_state is None or best[key] < max(resumed_at, 0):
        engine.barrier()
        best_state = torch.load(ctx.run.path(best_weights), weights_only=True, map_location=engine.device)
        best_hyperparameters = propose(ctx, best[key], state["results"][:best[key]]).hyperparameters
    model.load_state_dict(best_state)
    steps = sum(1 for r in ctx.run.records() if str(r.get("phase", "")).startswith("proxy-"))
    details = {"lambda_final": None, "search_steps": steps, f"{key}s": state["results"]}
    return SearchOutcome(arch, model, float(state["elapsed_s"]), best_hyperparameters, arch, [], details,
                         recalibrate_bn=False)
