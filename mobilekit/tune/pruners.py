"""Multi-fidelity on the search epochs (``--fidelity epochs:MIN:MAX``): every trial is budgeted MAX epochs,
reports eq. 19 after each epoch (:class:`~mobilekit.tune.objective.EpochRewards`), and Optuna's successive
halving or Hyperband pruner stops the unpromising ones after MIN, MIN·η, ... epochs.

The paper (Sec. VII-B, Fig. 9 right) warns that low-epoch evaluations mislead when tuning λ: a large λ reaches
the target early and then overshoots; ``--grid`` shows it for a given problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from mobilekit.errors import ConfigError

PRUNERS = ("none", "sh", "hyperband")


@dataclass(frozen=True)
class Fidelity:
    """Search epochs from ``min_epochs`` (the first rung) to ``max_epochs`` (each trial's budget)."""

    min_epochs: int
    max_epochs: int


def parse_fidelity(text: str) -> Fidelity:
    """Decode ``epochs:MIN:MAX``.

    Raises:
        ConfigError: another resource, unreadable numbers, or not 1 <= MIN < MAX.
    """
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != "epochs":
        raise ConfigError(f"--fidelity {text}: write epochs:MIN:MAX (e.g. epochs:2:8); epochs is the only resource")
    try:
        low, high = int(parts[1]), int(parts[2])
    except ValueError:
        raise ConfigError(f"--fidelity {text}: MIN and MAX must be whole numbers of epochs") from None
    if not 1 <= low < high:
        raise ConfigError(f"--fidelity {text}: need 1 <= MIN < MAX, got {low} and {high}")
    return Fidelity(low, high)


def make_pruner(name: str, fidelity: Fidelity | None, reduction_factor: int = 3) -> optuna.pruners.BasePruner:
    """``none`` (Optuna's NopPruner), ``sh`` (successive halving from ``fidelity.min_epochs``) or
    ``hyperband`` (brackets between ``fidelity.min_epochs`` and ``fidelity.max_epochs``).

    Raises:
        ConfigError: unknown name, or a pruner without a fidelity to prune on.
    """
    if name not in PRUNERS:
        raise ConfigError(f"--pruner {name!r} is unknown: use one of {', '.join(PRUNERS)}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if fidelity is None:
        raise ConfigError(f"--pruner {name} needs --fidelity epochs:MIN:MAX (the epochs it prunes on)")
    if name == "sh":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=fidelity.min_epochs,
                                                      reduction_factor=reduction_factor)
    return optuna.pruners.HyperbandPruner(min_resource=fidelity.min_epochs, max_resource=fidelity.max_epochs,
                                          reduction_factor=reduction_factor)
