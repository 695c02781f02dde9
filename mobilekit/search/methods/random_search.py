"""Random-search baseline: sample ``random_samples`` architectures whose predicted latency lies in
[0.95 T, T], train each for ``proxy_epochs`` from scratch, keep the one with the best validation accuracy
(its trained weights seed the final training when ``final_init = "inherit"``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mobilekit.search.budget import RANDOM_WINDOW, sample_in_window
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters
from mobilekit.search.methods.proxy_trials import Trial, run_trials
from mobilekit.search.training import SearchContext
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
    hyperparameters = TrainingHyperparameters.from_config(ctx.config)
    candidates = sample_candidates(ctx)
    return run_trials(ctx, len(candidates), proxy_epochs(ctx.config),
                      lambda ctx, i, history: Trial(candidates[i], hyperparameters),
                      key="candidate", best_weights=BEST_WEIGHTS)
