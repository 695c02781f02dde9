"""Random search over AutoHAS's joint space (the paper's Table 3 "RS"): per trial an architecture sampled in the
latency window [0.95 T, T] and a learning rate and weight decay drawn log-uniformly from the range of AutoHAS's
bases (:mod:`~mobilekit.search.methods.joint_trials`), each trained from scratch; the best validation accuracy wins."""

from __future__ import annotations

import math
import random
from typing import Any

from mobilekit.search.budget import RANDOM_WINDOW, sample_in_window
from mobilekit.search.methods.joint_trials import Options, hyperparameter_ranges, run_trials
from mobilekit.search.outcome import SearchOutcome
from mobilekit.search.training import SearchContext
from mobilekit.space import Architecture

LATENCY_MODEL = "lookup"
SUMMARY = "random joint baseline: architecture in [0.95T, T] + log-uniform lr and weight decay, trained per trial"

__all__ = ["LATENCY_MODEL", "Options", "SUMMARY", "propose", "search"]


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def propose(ctx: SearchContext, i: int, history: list[dict[str, Any]]) -> tuple[Architecture, float, float, dict[str, Any]]:
    """Trial ``i``: seeded by (seed, i) only, so a resumed run proposes the same."""
    cfg = ctx.config
    rng = random.Random(cfg.seed * 100_003 + i)
    arch = sample_in_window(ctx.latency_model, ctx.train_space, RANDOM_WINDOW[0] * cfg.target_ms,
                            RANDOM_WINDOW[1] * cfg.target_ms, rng)
    ranges = hyperparameter_ranges(cfg)
    return arch, log_uniform(rng, *ranges["lr"]), log_uniform(rng, *ranges["weight_decay"]), {}


def search(ctx: SearchContext) -> SearchOutcome:
    return run_trials(ctx, propose, "random-has search")
