"""The latency penalty every searcher adds to its loss: ``lambda * log R`` (Single-Path NAS eq. 8 and FBNet's
multiplicative form, in log), with ``lambda`` steered toward the target (PI control) or held fixed.

``R`` is whatever latency model the method consumes (:mod:`mobilekit.latency.differentiable`): the superkernel
latency of threshold decisions, the expected latency of a categorical distribution, or a lookup.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def steer_lambda(state: dict, latency_ms: float, aim_ms: float, integral_gain: float, proportional_gain: float,
                 nonnegative: bool = False) -> float:
    """PI control of the latency weight: returns ``lambda`` for this step and updates ``state``.

    ``lambda`` acts as a Lagrange multiplier for ``log R = log aim`` (R of the current discrete architecture, ms;
    ``aim_ms`` in ms): ``lambda = lambda_I + k_p * e`` with ``e = log(R / aim)``, and ``lambda_I += k_i * e`` only
    while R is not already moving toward the aim (``|e|`` did not shrink since the last step): integrating while
    the decisions are still travelling would wind ``lambda_I`` up and overshoot. Without ``nonnegative``,
    ``lambda`` may turn negative below the aim, which pushes subsets back on (rewards latency). With
    ``nonnegative`` (a multiplier of the inequality ``R <= aim``) ``lambda`` is projected to ``>= 0`` and the
    integral has anti-windup: it is kept ``>= 0`` and does not accumulate while ``lambda`` is clipped at 0 and the
    error would push it further down, so after a long undershoot an overshoot acts at once (``lambda =
    lambda_I + k_p * e > 0`` on its first step). Both gains 0 keep ``lambda`` fixed (the paper's setting).
    """
    error = math.log(latency_ms / aim_ms)
    integral = float(state["lambda"])
    if nonnegative:
        integral = max(0.0, integral)
    last = state.get("last_error")
    lam = integral + proportional_gain * error
    clipped = nonnegative and lam <= 0.0 and error < 0.0
    if (last is None or abs(error) >= abs(last)) and not clipped:
        integral += integral_gain * error
        if nonnegative:
            integral = max(0.0, integral)
    state["lambda"] = integral
    state["last_error"] = error
    return max(0.0, lam) if nonnegative else lam


def ramp_factor(steered_steps: int, ramp_steps: int) -> float:
    """Share (0-1] of ``lambda`` applied on the ``steered_steps``-th steered step (1-based): rises linearly
    ``1/ramp_steps, 2/ramp_steps, ... 1`` over the first ``ramp_steps`` steps, then stays 1 (no ramp for 0)."""
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, max(1, steered_steps) / ramp_steps)


class LatencyPenalty:
    """``lambda * log R`` with ``lambda`` steered toward ``aim * target_ms`` (ms).

    ``state`` is a JSON-able dict (``lambda``, ``last_error``, ``steered``: steps steered so far) that the caller
    keeps in its checkpoint; pass the phase's state dict so that resuming restores the controller exactly.
    ``nonnegative`` projects ``lambda`` to ``>= 0`` with anti-windup (:func:`steer_lambda`); ``ramp_steps`` scales
    the steered ``lambda`` by :func:`ramp_factor` over the first ``ramp_steps`` steered steps, so that the runtime
    term does not reach the decisions at full strength in one step (0: no ramp).
    """

    def __init__(self, target_ms: float, state: dict[str, Any], aim: float = 0.95, lambda_init: float = 0.0,
                 integral_gain: float = 0.1, proportional_gain: float = 8.0, nonnegative: bool = False,
                 ramp_steps: int = 0) -> None:
        self.target_ms, self.aim_ms = target_ms, aim * target_ms
        self.integral_gain, self.proportional_gain = integral_gain, proportional_gain
        self.nonnegative, self.ramp_steps = nonnegative, ramp_steps
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
        """``lambda`` for this step from the latency (ms) of the current discrete architecture (ramped, and
        ``>= 0`` when ``nonnegative``)."""
        lam = steer_lambda(self.state, latency_ms, self.aim_ms, self.integral_gain, self.proportional_gain,
                           self.nonnegative)
        if self.ramp_steps <= 0:
            return lam
        self.state["steered"] = int(self.state.get("steered", 0)) + 1
        return lam * ramp_factor(self.state["steered"], self.ramp_steps)

    def __call__(self, latency_ms: torch.Tensor, lam: float) -> torch.Tensor:
        """``lam * log R`` (scalar tensor) of a differentiable latency ``latency_ms`` (ms)."""
        return lam * torch.log(latency_ms)
