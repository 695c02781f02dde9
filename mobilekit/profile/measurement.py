"""One latency measurement of one model file on one device."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Sequence


@dataclass(frozen=True)
class Measurement:
    """Latency statistics over ``runs`` timed inferences (ms); ``wall_s`` is the wall time the measurement took,
    overheads (transfer, model load, warm-up, cool-down) included."""

    median_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    runs: int
    wall_s: float = 0.0

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], wall_s: float = 0.0) -> "Measurement":
        samples = list(samples_ms)
        return cls(
            median_ms=float(statistics.median(samples)),
            std_ms=float(statistics.pstdev(samples)) if len(samples) > 1 else 0.0,
            min_ms=float(min(samples)),
            max_ms=float(max(samples)),
            runs=len(samples),
            wall_s=wall_s,
        )

    def to_entry(self) -> dict:
        """The latency-table ENTRY for this measurement."""
        return {**asdict(self), "measured": True}
