"""Random-search baseline: sample ``random_samples`` architectures whose predicted latency lies in
[0.95 T, T], train each for ``proxy_epochs`` from scratch, keep the one with the best validation accuracy
(its trained weights seed the final training when ``final_init = "inherit"``)."""

from __future__ import annotations

import random

import torch

from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.budget import RANDOM_WINDOW, sample_in_window
from mobilekit.search.runfolder import save_weights
from mobilekit.search.single_path import arch_summary
from mobilekit.search.training import SearchContext, SearchOutcome, TrainPhase, evaluate
from mobilekit.space import Architecture

BEST_WEIGHTS = "best_proxy.pt"


def sample_candidates(ctx: SearchContext) -> list[Architecture]:
    cfg = ctx.config
    rng = random.Random(cfg.seed)
    lo, hi = RANDOM_WINDOW[0] * cfg.target_ms, RANDOM_WINDOW[1] * cfg.target_ms
    return [sample_in_window(ctx.runtime, ctx.train_space, lo, hi, rng) for _ in range(cfg.random_samples)]


def search(ctx: SearchContext) -> SearchOutcome:
    """Train every candidate for the proxy epochs (resuming inside the candidate a checkpoint was in)."""
    cfg, runtime = ctx.config, ctx.runtime
    candidates = sample_candidates(ctx)
    resumed_at = -1
    if ctx.checkpoint is not None and str(ctx.checkpoint[1].get("phase", "")).startswith("proxy-"):
        resumed_at = int(ctx.checkpoint[1]["phase"].split("-", 1)[1])
    state: dict = {"results": [], "elapsed_s": 0.0}
    for i, arch in enumerate(candidates):
        if i < resumed_at:
            continue
        torch.manual_seed(cfg.seed * 1000 + i)
        model = MobileNet(arch)
        predicted = runtime.lookup_ms(arch)
        phase = TrainPhase(model=model, lr=cfg.lr, state=state,
                           tags={"candidate": i, "arch": arch.to_string(), "runtime_hard_ms": predicted,
                                 "decisions": arch_summary(arch)},
                           **ctx.phase_kwargs(f"proxy-{i}", epochs=cfg.proxy_epochs_))
        start = phase.restore(ctx.checkpoint if i == resumed_at else None)
        phase.elapsed_s = float(state.get("elapsed_s", 0.0)) if i != resumed_at else phase.elapsed_s
        phase.run_loop(start)
        accuracy = evaluate(model, ctx.splits.val)
        state["elapsed_s"] = phase.elapsed_s
        results = state["results"]
        results.append({"candidate": i, "arch": arch.to_string(), "predicted_ms": predicted, "val_accuracy": accuracy})
        if accuracy > max((r["val_accuracy"] for r in results[:-1]), default=-1.0):
            save_weights(model, ctx.run.path(BEST_WEIGHTS))
    best = max(state["results"], key=lambda r: (r["val_accuracy"], -r["candidate"]))
    arch = candidates[best["candidate"]]
    model = MobileNet(arch)
    model.load_state_dict(torch.load(ctx.run.path(BEST_WEIGHTS), weights_only=True))
    info = {"derived_arch": arch.to_string(), "derived_ms": runtime.lookup_ms(arch), "repairs": [],
            "candidates": state["results"], "search_steps": sum(1 for r in ctx.run.records()
                                                                if str(r.get("phase", "")).startswith("proxy-"))}
    return SearchOutcome(arch, model, float(state["elapsed_s"]), info, recalibrate_bn=False)
