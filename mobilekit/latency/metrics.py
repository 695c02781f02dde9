"""Error metrics of latency predictions, all relative to the measured value."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

METRIC_NAMES = ("n", "rmse_ms", "mae_ms", "mape_pct", "max_ape_pct", "bias_pct", "within_5_pct", "within_10_pct")


def error_metrics(measured_ms: Sequence[float], predicted_ms: Sequence[float]) -> dict[str, float]:
    """How far ``predicted_ms`` is from ``measured_ms`` (both shape (N,), milliseconds).

    Returns ``n``; ``rmse_ms`` and ``mae_ms``; ``mape_pct`` and ``max_ape_pct``, the mean and the largest
    absolute error in percent of the measured value; ``bias_pct``, the mean signed percentage error (positive:
    predictions too high); ``within_5_pct``/``within_10_pct``, the share of predictions (in %) within +-5 % and
    +-10 % of the measured value.
    """
    measured = np.asarray(measured_ms, dtype=np.float64).ravel()
    predicted = np.asarray(predicted_ms, dtype=np.float64).ravel()
    if measured.shape != predicted.shape:
        raise ValueError(f"measured has {measured.size} values, predicted {predicted.size}")
    if measured.size == 0:
        return {name: float("nan") for name in METRIC_NAMES} | {"n": 0}
    error = predicted - measured
    pct = 100.0 * error / measured
    return {
        "n": int(measured.size),
        "rmse_ms": float(np.sqrt(np.mean(error ** 2))),
        "mae_ms": float(np.mean(np.abs(error))),
        "mape_pct": float(np.mean(np.abs(pct))),
        "max_ape_pct": float(np.max(np.abs(pct))),
        "bias_pct": float(np.mean(pct)),
        "within_5_pct": float(100.0 * np.mean(np.abs(pct) <= 5.0)),
        "within_10_pct": float(100.0 * np.mean(np.abs(pct) <= 10.0)),
    }


def significant(value: float, digits: int = 3) -> str:
    """``value`` (e.g. ms) with at least ``digits`` significant digits and at least 3 decimals:
    12.3456 -> "12.346", 0.000123 -> "0.000123" (not "0.000"), 0 -> "0.000"."""
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return f"{value:.3f}"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{value:.{max(3, decimals)}f}"


def format_metrics_row(label: str, metrics: dict[str, float], width: int = 26) -> str:
    """One aligned text row: label, RMSE, mean/max abs % error, share within 5 % and 10 %."""
    return (f"{label:<{width}} {significant(metrics['rmse_ms']):>9} {metrics['mape_pct']:>8.2f} {metrics['max_ape_pct']:>8.2f} "
            f"{metrics['bias_pct']:>+8.2f} {metrics['within_5_pct']:>7.1f} {metrics['within_10_pct']:>7.1f}")


def format_metrics_header(label: str = "", width: int = 26) -> str:
    return (f"{label:<{width}} {'RMSE ms':>9} {'MAPE %':>8} {'max %':>8} {'bias %':>8} {'<=5 %':>7} {'<=10 %':>7}")
