"""Architectures under a latency budget: the target check, sampling inside a latency window (random baseline),
and the greedy repair that moves a derived architecture into the window when a search ends outside it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from mobilekit.errors import SearchError
from mobilekit.space import Architecture, LayerType, SearchSpace

if TYPE_CHECKING:
    from mobilekit.latency.differentiable import LatencyModel


WINDOW = (0.9, 1.0)          # a search result should land in [0.9 T, T]
RANDOM_WINDOW = (0.95, 1.0)  # the random baseline samples in [0.95 T, T]


def check_target(latency_model: LatencyModel, target_ms: float, where: str = "table") -> tuple[float, float]:
    """Raise :class:`SearchError` when ``target_ms`` lies outside [fastest, slowest] of the table's networks."""
    fastest, slowest = latency_model.bounds_ms()
    if not fastest <= target_ms <= slowest:
        raise SearchError(f"target {target_ms:g} ms is outside what {where} allows: the fastest network takes "
                          f"{fastest:.1f} ms and the slowest {slowest:.1f} ms; pick a target in between")
    return fastest, slowest


def sample_in_window(latency_model: LatencyModel, space: SearchSpace, lo_ms: float, hi_ms: float, rng: random.Random,
                     max_moves: int = 20_000) -> Architecture:
    """A random architecture with predicted latency in [lo_ms, hi_ms]: uniform per position, then random
    single-position changes accepted when they bring the latency closer to the window."""
    positions = space.searchable_positions
    choices = {p.index: rng.choice(latency_model.allowed_types(p)) for p in positions}
    total = latency_model.fixed_ms + sum(latency_model.type_ms(i, t) for i, t in choices.items())

    def distance(ms: float) -> float:
        return max(lo_ms - ms, ms - hi_ms, 0.0)

    for _ in range(max_moves):
        if distance(total) == 0:
            return _architecture(space, choices)
        position = rng.choice(positions)
        new = rng.choice(latency_model.allowed_types(position))
        moved = total - latency_model.type_ms(position.index, choices[position.index]) + latency_model.type_ms(position.index, new)
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


def repair_to_window(arch: Architecture, latency_model: LatencyModel, lo_ms: float, hi_ms: float,
                     score: Callable[[int, LayerType], float]) -> tuple[Architecture, list[Repair]]:
    """Move ``arch`` into [lo_ms, hi_ms] with the fewest-regret single-layer changes.

    While too slow: among changes that lower the latency, take the one that loses least ``score`` (the
    searcher's log-probability of a type at a position). While too fast: among changes that raise the latency
    and stay <= hi_ms, take the one that loses least score. Returns the architecture and the changes made
    (none when it was already inside).
    """
    chosen = {s.index: s.op for s in arch.layers() if s.position.searchable}
    positions = [p for p in arch.space.searchable_positions]
    total = latency_model.lookup_ms(arch)
    repairs: list[Repair] = []
    for _ in range(4 * len(positions) * 16):
        if lo_ms <= total <= hi_ms:
            break
        too_slow = total > hi_ms
        best = None
        for position in positions:
            current = chosen[position.index]
            current_ms = latency_model.type_ms(position.index, current)
            for other in latency_model.allowed_types(position):
                delta = latency_model.type_ms(position.index, other) - current_ms
                if (too_slow and delta >= 0) or (not too_slow and (delta <= 0 or total + delta > hi_ms)):
                    continue
                # score differences below 1e-6 count as ties (float noise must not pick the change)
                key = (round(score(position.index, other) - score(position.index, current), 6), abs(delta))
                if best is None or key > best[0]:
                    best = (key, position.index, other, delta)
        if best is None:
            break
        _, index, other, delta = best
        total += delta
        repairs.append(Repair(index, chosen[index].name, other.name, total))
        chosen[index] = other
    return _architecture(arch.space, chosen), repairs
