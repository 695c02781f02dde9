"""Random-search baseline: sample ``random_samples`` architectures whose predicted latency lies in
[0.95 T, T], train each for ``proxy_epochs`` from scratch, keep the one with the best validation accuracy
(its trained weights seed the final training when ``final_init = "inherit"``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.budget import RANDOM_WINDOW, sample_in_window
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters
from mobilekit.search.runfolder import save_weights
from mobilekit.search.single_path import arch_summary
from mobilekit.search.training import SearchContext, TrainPhase, evaluate
from mobilekit.space import Architecture

LATENCY_MODEL = "lookup"
SUMMARY = "random baseline: sample architectures in [0.95T, T], proxy-train each, keep the best"
BEST_WEIGHTS = "best_proxy.pt"


@dataclass
class Options:
    """Random-baseline settings (recipe section ``[search.random]``)."""

    random_samples: int = option(4, "architectures to try", ge=1)
    proxy_epochs: int | None = option(None, "epochs per candidate (default: epochs // random_samples)", ge=1)


def proxy_epochs(config: Any) -> int:
    return max(1, config.epochs // config.random_samples) if config.proxy_epochs is None else config.proxy_epochs


def sample_candidates(ctx: SearchContext) -> list[Architecture]:
    cfg = ctx.config
    rng = random.Random(cfg.seed)
    lo, hi = RANDOM_WINDOW[0] * cfg.target_ms, RANDOM_WINDOW[1] * cfg.target_ms
    return [sample_in_window(ctx.latency_model, ctx.train_space, lo, hi, rng) for _ in range(cfg.random_samples)]


def search(ctx: SearchContext) -> SearchOutcome:
    """Train every candidate for the proxy epochs (resuming inside the candidate a checkpoint was in)."""
    cfg, latency_model, engine = ctx.config, ctx.latency_model, ctx.engine
    hyperparameters = TrainingHyperparameters.from_config(cfg)
    candidates = sample_candidates(ctx)
    resumed_at = -1
    if ctx.checkpoint is not None and str(ctx.checkpoint[1].get("phase", "")).startswith("proxy-"):
        resumed_at = int(ctx.checkpoint[1]["phase"].split("-", 1)[1])
    state: dict = {"results": [], "elapsed_s": 0.0}
    best_state = None
    for i, arch in enumerate(candidates):
        if i < resumed_at:
            continue
        torch.manual_seed(cfg.seed * 1000 + i)
        model = MobileNet(arch)
        predicted = latency_model.lookup_ms(arch)
        phase = TrainPhase(model=model, hyperparameters=hyperparameters, state=state,
                           tags={"candidate": i, "arch": arch.to_string(), "runtime_hard_ms": predicted,
                                 "decisions": arch_summary(arch)},
                           **ctx.phase_kwargs(f"proxy-{i}", epochs=proxy_epochs(cfg)))
        start = phase.restore(ctx.checkpoint if i == resumed_at else None)
        phase.elapsed_s = float(state.get("elapsed_s", 0.0)) if i != resumed_at else phase.elapsed_s
        phase.run_loop(start)
        accuracy = evaluate(model, ctx.splits.val, engine=engine, workers=cfg.workers)
        state["elapsed_s"] = phase.elapsed_s
        results = state["results"]
        results.append({"candidate": i, "arch": arch.to_string(), "predicted_ms": predicted, "val_accuracy": accuracy})
        if accuracy > max((r["val_accuracy"] for r in results[:-1]), default=-1.0):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if engine.is_writer:
                save_weights(model, ctx.run.path(BEST_WEIGHTS))
    best = max(state["results"], key=lambda r: (r["val_accuracy"], -r["candidate"]))
    arch = candidates[best["candidate"]]
    model = engine.place(MobileNet(arch))
    if best_state is None or best["candidate"] < max(resumed_at, 0):
        engine.barrier()
        best_state = torch.load(ctx.run.path(BEST_WEIGHTS), weights_only=True, map_location=engine.device)
    model.load_state_dict(best_state)
    steps = sum(1 for r in ctx.run.records() if str(r.get("phase", "")).startswith("proxy-"))
    details = {"lambda_final": None, "search_steps": steps, "candidates": state["results"]}
    return SearchOutcome(arch, model, float(state["elapsed_s"]), hyperparameters, arch, [], details,
                         recalibrate_bn=False)
