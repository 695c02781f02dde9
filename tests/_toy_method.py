"""A toy search method for tests/test_search_methods.py: the whole of a new method is this module plus one
registry line. It picks, per searchable position, the fastest allowed type, then swaps in slower types while the
network stays under the target; its options are one integer and one choice."""

from __future__ import annotations

from dataclasses import dataclass

from mobilekit.models.torch_builder import MobileNet
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters
from mobilekit.search.training import SearchContext
from mobilekit.space import Architecture

LATENCY_MODEL = "lookup"
SUMMARY = "toy: greedy table walk (tests only)"


@dataclass
class Options:
    greedy_passes: int = option(1, "passes of the greedy walk", ge=1)
    order: str = option("forward", "walk the positions forward or backward", choices=("forward", "backward"))


def search(ctx: SearchContext) -> SearchOutcome:
    model_ms = ctx.latency_model
    positions = ctx.train_space.searchable_positions
    if ctx.options.order == "backward":
        positions = positions[::-1]
    chosen = {p.index: min(model_ms.allowed_types(p), key=lambda t: model_ms.type_ms(p.index, t)) for p in positions}
    total = model_ms.fixed_ms + sum(model_ms.type_ms(i, t) for i, t in chosen.items())
    for _ in range(ctx.options.greedy_passes):
        for p in positions:
            for t in sorted(model_ms.allowed_types(p), key=lambda t: model_ms.type_ms(p.index, t)):
                moved = total - model_ms.type_ms(p.index, chosen[p.index]) + model_ms.type_ms(p.index, t)
                if moved <= ctx.config.target_ms:
                    chosen[p.index], total = t, moved
    arch = Architecture(ctx.train_space, tuple(chosen.get(p.index, p.candidates[0]) for p in ctx.train_space.positions))
    hyperparameters = TrainingHyperparameters(lr=0.01, lr_schedule="linear", weight_decay=1e-4, optimizer="adamw",
                                              augment="flip", source="toy search")
    return SearchOutcome(arch, MobileNet(arch), 0.0, hyperparameters,
                         details={"search_steps": 0, "passes": ctx.options.greedy_passes}, recalibrate_bn=False)
