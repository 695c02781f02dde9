"""What a searcher returns (:class:`SearchOutcome`) and the hyper-parameters it hands to the final training
(:class:`TrainingHyperparameters`), plus the end-of-search derivation every architecture searcher shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from torch import nn

from mobilekit.search.budget import WINDOW, Repair, repair_to_window
from mobilekit.space import Architecture, LayerType


@dataclass(frozen=True)
class TrainingHyperparameters:
    """How the final training trains the derived network: learning rate (per step, at the start of the
    ``lr_schedule``), weight decay, optimiser, augmentation policy; ``source`` says who chose them ("settings"
    from the recipe/flags, or the searcher's name when the search found them). ``lr_stages`` (optional): a
    searched piecewise-constant learning rate, one value per equal share of the training steps, applied on top
    of ``lr_schedule`` (e.g. AutoHAS's per-stage learning rates with the "constant" schedule)."""

    lr: float
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0
    optimizer: str = "adam"
    augment: str = "none"
    source: str = "settings"
    lr_stages: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_stages", tuple(float(v) for v in self.lr_stages))   # JSON gives a list

    @property
    def lr_stage_factors(self) -> tuple[float, ...]:
        """``lr_stages`` as multipliers of ``lr`` (empty when not staged)."""
        return tuple(v / self.lr for v in self.lr_stages)

    @classmethod
    def from_config(cls, config: Any) -> "TrainingHyperparameters":
        return cls(config.lr, config.lr_schedule, config.weight_decay, config.optimizer, config.augment)

    def describe(self) -> str:
        lr = (f"lr per stage {', '.join(f'{v:.3g}' for v in self.lr_stages)} ({len(self.lr_stages)} equal stages, "
              f"{self.lr_schedule} schedule)" if self.lr_stages else f"lr {self.lr:g} ({self.lr_schedule} schedule)")
        return (f"{lr}, weight decay {self.weight_decay:g}, "
                f"{self.optimizer}, augmentation {self.augment} (from the {self.source})")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.lr_stages:
            out["lr_stages"] = list(self.lr_stages)
        else:
            del out["lr_stages"]                # unstaged hyper-parameters read as before
        return out


@dataclass
class SearchOutcome:
    """A searcher's result.

    ``arch``: the architecture (in the training space; inside the latency window when repair could do it).
    ``model``: the network with the weights the search trained (the deliverable when ``final_epochs`` is 0,
    else the start of the final training when ``final_init`` is "inherit").
    ``hyperparameters``: what the final training must use. ``derived_arch``/``repairs``: the architecture the
    search derived before the window repair, and the repair's changes. ``details``: per-method facts for the
    summary (JSON-able: ``lambda_final``, ``search_steps``, ``candidates`` ...). ``recalibrate_bn``: the network's
    BN statistics come from a supernet and must be recomputed.
    """

    arch: Architecture
    model: nn.Module
    search_s: float
    hyperparameters: TrainingHyperparameters
    derived_arch: Architecture | None = None
    repairs: list[Repair] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    recalibrate_bn: bool = True


def derive_in_window(derived: Architecture, latency_model: Any, target_ms: float,
                     score: Callable[[int, LayerType], float]) -> tuple[Architecture, list[Repair]]:
    """The end of every architecture search: move the derived architecture into [0.9 T, T] with the fewest-regret
    layer changes (:func:`~mobilekit.search.budget.repair_to_window`, ``score`` = the searcher's log-probability
    of a type at a position)."""
    return repair_to_window(derived, latency_model, WINDOW[0] * target_ms, WINDOW[1] * target_ms, score)


def arch_summary(arch: Architecture) -> str:
    """Counts of the searched choices, e.g. ``k5:7 e6:9 se:2 skip:4``."""
    ops = arch.searchable_choices
    return (f"k5:{sum(o.kernel == 5 for o in ops)} e6:{sum(o.expansion == 6 for o in ops)} "
            f"se:{sum(o.se_ratio > 0 for o in ops)} skip:{sum(o.is_skip for o in ops)}")
