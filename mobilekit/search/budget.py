"""Architectures under a latency budget: the target check, sampling inside a latency window (random baseline),
and the greedy repair that moves a derived architecture into the window when a search ends outside it."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Protocol

from mobilekit.errors import SearchError
from mobilekit.space import Architecture, LayerType, SearchSpace


WINDOW = (0.9, 1.0)          # a search result should land in [0.9 T, T]
RANDOM_WINDOW = (0.95, 1.0)  # the random baseline samples in [0.95 T, T]


def steer_lambda(state: dict, runtime_ms: float, aim_ms: float, integral_gain: float, proportional_gain: float) -> float:
    """PI control of the latency weight: returns ``lambda`` for this step and updates ``state``.

    ``lambda`` acts as a Lagrange multiplier for ``log R = log aim`` (R of the current discrete architecture):
    ``lambda = lambda_I + k_p * e`` with ``e = log(R / aim)``, and ``lambda_I += k_i * e`` only while R is not
    already moving toward the aim (``|e|`` did not shrink since the last step): integrating while the decisions
    are still travelling would wind ``lambda_I`` up and overshoot. ``lambda`` may turn negative below the aim,
    which pushes subsets back on. Both gains 0 keep ``lambda`` fixed (the paper's setting).
    """
    error = math.log(runtime_ms / aim_ms)
    integral = float(state["lambda"])
    last = state.get("last_error")
    if last is None or abs(error) >= abs(last):
        state["lambda"] = integral + integral_gain * error
    state["last_error"] = error
    return integral + proportional_gain * error


class Runtime(Protocol):
    """What the budget functions need from a runtime model (both forms in :mod:`mobilekit.latency.runtime_loss`)."""

    fixed_ms: float

    def type_ms(self, position: int, layer_type: LayerType) -> float: ...
    def allowed_types(self, position) -> tuple[LayerType, ...]: ...
    def lookup_ms(self, arch: Architecture) -> float: ...
    def bounds_ms(self) -> tuple[float, float]: ...


def check_target(runtime: Runtime, target_ms: float, where: str = "table") -> tuple[float, float]:
    """Raise :class:`SearchError` when ``target_ms`` lies outside [fastest, slowest] of the table's networks."""
    fastest, slowest = runtime.bounds_ms()
    if not fastest <= target_ms <= slowest:
        raise SearchError(f"target {target_ms:g} ms is outside what {where} allows: the fastest network takes "
                          f"{fastest:.1f} ms and the slowest {slowest:.1f} ms; pick a target in between")
    return fastest, slowest


def sample_in_window(runtime: Runtime, space: SearchSpace, lo_ms: float, hi_ms: float, rng: random.Random,
                     max_moves: int = 20_000) -> Architecture:
    """A random architecture with predicted latency in [lo_ms, hi_ms]: uniform per position, then random
    single-position changes accepted when they bring the latency closer to the window."""
    positions = space.searchable_positions
    choices = {p.index: rng.choice(runtime.allowed_types(p)) for p in positions}
    total = runtime.fixed_ms + sum(runtime.type_ms(i, t) for i, t in choices.items())

    def distance(ms: float) -> float:
        return max(lo_ms - ms, ms - hi_ms, 0.0)

    for _ in range(max_moves):
        if distance(total) == 0:
            return _architecture(space, choices)
        position = rng.choice(positions)
        new = rng.choice(runtime.allowed_types(position))
        moved = total - runtime.type_ms(position.index, choices[position.index]) + runtime.type_ms(position.index, new)
        if distance(moved) < distance(total):
            choices[position.index], total = new, moved
    raise SearchError(f"found no architecture between {lo_ms:.1f} and {hi_ms:.1f} ms; widen the window or "
                      "move the target toward the middle of the table's range")


def _architecture(space: SearchSpace, chosen: dict[int, LayerType]) -> Architecture:
    return Architecture(space, tuple(chosen.get(p.index, p.candidates[0]) for p in space.positions))


@dataclass(frozen=True)
class Repair:
    """One change made by :func:`repair_to_window`."""

    position: int
    before: str
    after: str
    latency_ms: float          # whole-network latency after the change

    def to_dict(self) -> dict:
        return {"layer": self.position, "from": self.before, "to": self.after, "latency_ms": round(self.latency_ms, 4)}


def repair_to_window(arch: Architecture, runtime: Runtime, lo_ms: float, hi_ms: float,
                     score: Callable[[int, LayerType], float]) -> tuple[Architecture, list[Repair]]:
    """Move ``arch`` into [lo_ms, hi_ms] with the fewest-regret single-layer changes.

    While too slow: among changes that lower the latency, take the one that loses least ``score`` (the
    searcher's log-probability of a type at a position). While too fast: among changes that raise the latency
    and stay <= hi_ms, take the one that loses least score. Returns the architecture and the changes made
    (none when it was already inside).
    """
    chosen = {s.index: s.op for s in arch.layers() if s.position.searchable}
    positions = [p for p in arch.space.searchable_positions]
    total = runtime.lookup_ms(arch)
    repairs: list[Repair] = []
    for _ in range(4 * len(positions) * 16):
        if lo_ms <= total <= hi_ms:
            break
        too_slow = total > hi_ms
        best = None
        for position in positions:
            current = chosen[position.index]
            current_ms = runtime.type_ms(position.index, current)
            for other in runtime.allowed_types(position):
                delta = runtime.type_ms(position.index, other) - current_ms
                if (too_slow and delta >= 0) or (not too_slow and (delta <= 0 or total + delta > hi_ms)):
                    continue
                key = (score(position.index, other) - score(position.index, current), abs(delta))
                if best is None or key > best[0]:
                    best = (key, position.index, other, delta)
        if best is None:
            break
        _, index, other, delta = best
        total += delta
        repairs.append(Repair(index, chosen[index].name, other.name, total))
        chosen[index] = other
    return _architecture(arch.space, chosen), repairs
