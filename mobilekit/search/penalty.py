"""The latency penalty every searcher adds to its loss: ``lambda * log R`` (Single-Path NAS eq. 8 and FBNet's
multiplicative form, in log), with ``lambda`` steered toward the target (PI control) or held fixed.

``R`` is whatever latency model the method consumes (:mod:`mobilekit.latency.differentiable`): the superkernel
latency of threshold decisions, the expected latency of a categorical distribution, or a lookup.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def steer_lambda(state: dict, latency_ms: float, aim_ms: float, integral_gain: float, proportional_gain: float) -> float:
    """PI control of the latency weight: returns ``lambda`` for this step and updates ``state``.

    ``lambda`` acts as a Lagrange multiplier for ``log R = log aim`` (R of the current discrete architecture):
    ``lambda = lambda_I + k_p * e`` with ``e = log(R / aim)``, and ``lambda_I += k_i * e`` only while R is not
    already moving toward the aim (``|e|`` did not shrink since the last step): integrating while the decisions
    are still travelling would wind ``lambda_I`` up and overshoot. ``lambda`` may turn negative below the aim,
    which pushes subsets back on. Both gains 0 keep ``lambda`` fixed (the paper's setting).
    """
    error = math.log(latency_ms / aim_ms)
    integral = float(state["lambda"])
    last = state.get("last_error")
    if last is None or abs(error) >= abs(last):
        state["lambda"] = integral + integral_gain * error
    state["last_error"] = error
    return integral + proportional_gain * error


class LatencyPenalty:
    """``lambda * log R`` with ``lambda`` steered toward ``aim * target_ms``.

    ``state`` is a JSON-able dict (``lambda``, ``last_error``) that the caller keeps in its checkpoint; pass the
    phase's state dict so that resuming restores the controller exactly.
    """

    def __init__(self, target_ms: float, state: dict[str, Any], aim: float = 0.95, lambda_init: float = 0.0,
                 integral_gain: float = 0.1, proportional_gain: float = 8.0) -> None:
        self.target_ms, self.aim_ms = target_ms, aim * target_ms
        self.integral_gain, self.proportional_gain = integral_gain, proportional_gain
        self.state = state
        self.state.setdefault("lambda", lambda_init)

    @classmethod
    def from_config(cls, config: Any, state: dict[str, Any]) -> "LatencyPenalty":
        return cls(config.target_ms, state, config.target_aim, config.lambda_init, config.lambda_lr, config.lambda_p)

    @property
    def fixed(self) -> bool:
        """True when lambda never moves (both gains 0: the paper's hand-tuned setting)."""
        return self.integral_gain == 0 and self.proportional_gain == 0

    @property
    def lambda_integral(self) -> float:
        return float(self.state["lambda"])

    def steer(self, latency_ms: float) -> float:
        """``lambda`` for this step from the latency (ms) of the current discrete architecture."""
        return steer_lambda(self.state, latency_ms, self.aim_ms, self.integral_gain, self.proportional_gain)

    def __call__(self, latency_ms: torch.Tensor, lam: float) -> torch.Tensor:
        """``lam * log R`` (scalar tensor) of a differentiable latency ``latency_ms`` (ms)."""
        return lam * torch.log(latency_ms)
