"""The yardsticks a found architecture is judged against, beside the random-search protocol: depth-matched random
networks and hand-designed reference networks.

* **Depth-matched protocol.** At a small training scale the number of layers a network keeps decides most of its
  accuracy, so "a better architecture" is confounded with "fewer skipped layers". For every found network a
  depth-matched network has exactly as many skipped searchable layers (at random positions among those that may
  be skipped), random MBConv types elsewhere, and its predicted latency moved into the protocol window
  [0.95 T, T] by random single-layer changes that keep the skips (:func:`sample_depth_matched`); when no such
  network exists there, the window widens to the search's [0.9 T, T].
* **Hand-designed references** (:data:`REFERENCES`): what a user would otherwise pick at that latency, e.g.
  MnasNet-B1 written in this space (the searchable layers of the MnasNet backbone the Pixel 1 table measures;
  79.4 ms predicted by that table). Trained with the same fixed recipe, one run per seed.
"""

from __future__ import annotations

import random

from mobilekit.errors import ConfigError, SearchError
from mobilekit.space import Architecture, SearchSpace

# the 20 searchable layers (positions 1-20) of the MnasNet backbone, in the order of the Pixel 1 table's space
REFERENCES: dict[str, str] = {
    "mnasnet-b1": ("ir_k3_e3,ir_k3_e3,ir_k3_e3,skip,ir_k5_e3,ir_k5_e3,ir_k5_e3,skip,ir_k5_e6,ir_k5_e6,ir_k5_e6,skip,"
                   "ir_k3_e6,ir_k3_e6,skip,skip,ir_k5_e6,ir_k5_e6,ir_k5_e6,ir_k5_e6"),
}


def reference_network(name: str, space: SearchSpace) -> Architecture:
    """The hand-designed reference ``name`` in ``space`` (its resolution and classes); :class:`ConfigError` for
    an unknown name or a space it does not fit."""
    if name not in REFERENCES:
        raise ConfigError(f"--reference {name!r} is unknown; use one of {', '.join(REFERENCES)} or none")
    try:
        return Architecture.from_string(space, REFERENCES[name])
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"--reference {name}: it does not fit the table's space ({exc}); use --reference none")


def skipped_layers(arch: Architecture) -> int:
    """How many searchable layers of ``arch`` are skipped."""
    return sum(1 for p, t in zip(arch.space.positions, arch.choices) if p.searchable and t.is_skip)


def sample_depth_matched(latency_model, space: SearchSpace, skips: int, lo_ms: float, hi_ms: float,
                         rng: random.Random, tries: int = 20, moves: int = 4000) -> Architecture:
    """A random architecture with exactly ``skips`` skipped searchable layers and predicted latency (ms) in
    [lo_ms, hi_ms]: a random set of skippable positions skipped, a random non-skip type elsewhere, then random
    single-layer type changes (never to or from skip) accepted when they bring the latency closer to the window;
    ``tries`` fresh skip sets before giving up (:class:`SearchError`)."""
    positions = space.searchable_positions
    skippable = [p for p in positions if any(t.is_skip for t in latency_model.allowed_types(p))]
    if skips > len(skippable):
        raise SearchError(f"{skips} skipped layers asked for, but only {len(skippable)} layers may be skipped")

    def distance(ms: float) -> float:
        return max(lo_ms - ms, ms - hi_ms, 0.0)

    for _ in range(tries):
        skipped = {p.index for p in rng.sample(skippable, skips)}
        layers = {p.index: [t for t in latency_model.allowed_types(p) if not t.is_skip] for p in positions}
        choices = {}
        for p in positions:
            if p.index in skipped:
                choices[p.index] = next(t for t in latency_model.allowed_types(p) if t.is_skip)
            else:
                choices[p.index] = rng.choice(layers[p.index])
        total = latency_model.fixed_ms + sum(latency_model.type_ms(i, t) for i, t in choices.items())
        movable = [p for p in positions if p.index not in skipped]
        for _ in range(moves):
            if distance(total) == 0:
                return Architecture(space, tuple(choices.get(p.index, p.candidates[0]) for p in space.positions))
            if not movable:
                break
            position = rng.choice(movable)
            new = rng.choice(layers[position.index])
            moved = total - latency_model.type_ms(position.index, choices[position.index]) \
                + latency_model.type_ms(position.index, new)
            if distance(moved) < distance(total):
                choices[position.index], total = new, moved
    raise SearchError(f"no network with {skips} skipped layers between {lo_ms:.1f} and {hi_ms:.1f} ms")
