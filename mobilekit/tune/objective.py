"""The tuning objective of Single-Path NAS (Stamoulis et al., Sec. VII-B, eq. 19):

    maximize  Acc_val(λ) · (R(λ) / R_T)^w,   w = 0 if R <= R_T, else w = -1

so a network at or under the target scores its accuracy, and one over it is discounted by R_T / R. R is a
latency in ms of the same network whose accuracy is scored: the final (repaired, retrained) network's table
latency, or its measured one when the table's device was reachable. (Before issue 19, R defaulted to the derived
network's latency before mobilekit's repair into [0.9 T, T] while the accuracy was the repaired network's: eq. 19
scored two networks.)
"""

from __future__ import annotations

import math
from typing import Any

from mobilekit.errors import ConfigError

LATENCIES = ("final", "measured")
# per-step latency keys of the searchers' records, first present wins (single-path, multipath / random)
STEP_LATENCY_KEYS = ("runtime_hard_ms", "latency_ms", "expected_ms", "runtime_ms")


def reward(accuracy: float, latency_ms: float, target_ms: float) -> float:
    """Eq. 19: ``accuracy`` (0-1) times ``(latency_ms / target_ms) ** w``, w = 0 at or under target, else -1."""
    if not target_ms > 0:
        raise ValueError(f"target_ms must be > 0, got {target_ms}")
    return accuracy if latency_ms <= target_ms else accuracy * target_ms / latency_ms


def summary_latency_ms(summary: dict[str, Any], which: str = "final") -> float:
    """The R of eq. 19 from a search summary, of the network whose ``val_accuracy`` it holds: ``final``
    (``predicted_ms``) or ``measured`` (``measured_ms``).

    Raises:
        ConfigError: ``which`` is unknown, or ``measured`` was asked and the run measured nothing.
    """
    if which not in LATENCIES:
        raise ConfigError(f"--latency {which!r} is unknown: use one of {', '.join(LATENCIES)}")
    if which == "measured":
        value = summary.get("measured_ms")
        if value is None:
            raise ConfigError("--latency measured: the run measured nothing "
                              f"({summary.get('measure_note') or 'no device'}); give --set device=DESCRIPTOR.toml "
                              "and an export format, or use --latency final")
        return float(value)
    return float(summary["predicted_ms"])


def summary_reward(summary: dict[str, Any], which: str = "final") -> float:
    """Eq. 19 for a finished search (validation accuracy, R per :func:`summary_latency_ms`, its target)."""
    accuracy = float(summary["val_accuracy"])
    if math.isnan(accuracy):
        raise ConfigError("the data set has no validation split, so eq. 19 has no accuracy to score")
    return reward(accuracy, summary_latency_ms(summary, which), float(summary["target_ms"]))


class EpochRewards:
    """Eq. 19 per search epoch from the per-step records of ``run_search(on_step=...)``: mean batch accuracy
    of the epoch and the latency of the architecture at its last step. Calls ``report(value, epoch)``
    (epochs counted from 1) once an epoch is complete, i.e. when the next epoch or phase starts."""

    def __init__(self, target_ms: float, report) -> None:
        self.target_ms, self.report = target_ms, report
        self._epoch: int | None = None
        self._accuracies: list[float] = []
        self._latency_ms: float | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        searching = record.get("phase") == "search"
        epoch = record.get("epoch") if searching else None
        if self._epoch is not None and epoch != self._epoch:
            self._close()
        if not searching:
            return
        latency = next((record[k] for k in STEP_LATENCY_KEYS if record.get(k) is not None), None)
        if latency is None or "accuracy" not in record:
            return
        self._epoch = epoch
        self._accuracies.append(float(record["accuracy"]))
        self._latency_ms = float(latency)

    def finish(self, report=None) -> None:
        """Report the last epoch (no record follows it when the search has no final training), through
        ``report`` when given (e.g. one that records without pruning a search that has already finished)."""
        self._close(report)

    def _close(self, report=None) -> None:
        if self._accuracies and self._latency_ms is not None:
            accuracy = sum(self._accuracies) / len(self._accuracies)
            epoch = int(self._epoch) + 1
            self._epoch, self._accuracies = None, []
            (report or self.report)(reward(accuracy, self._latency_ms, self.target_ms), epoch)
        self._epoch, self._accuracies = None, []
