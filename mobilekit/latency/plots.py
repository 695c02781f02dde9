"""Predicted-vs-measured scatter plots (PNG through matplotlib's Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mobilekit import safewrite

MARKERS = ("o", "s", "^", "D", "v")


def scatter_plot(path: str | Path, measured_ms: Sequence[float], predictions: Mapping[str, Sequence[float]],
                 title: str = "", repeats: tuple[Sequence[float], Sequence[float]] | None = None,
                 repeat_label: str = "repeat 2 vs repeat 1 (noise)") -> Path:
    """Write a predicted-vs-measured scatter plot to ``path`` and return it.

    ``predictions`` maps a label (e.g. ``"lookup"``) to predicted ms, each shape (N,) like ``measured_ms``. The
    plot shows y = x and the +-10 % band; ``repeats`` (two measurements of the same networks) adds the device's
    own repeat noise as grey crosses (second repeat against the first).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = np.asarray(measured_ms, dtype=np.float64)
    fig = Figure(figsize=(6.0, 6.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = [measured]
    if repeats is not None:
        first, second = (np.asarray(r, dtype=np.float64) for r in repeats)
        ax.scatter(first, second, marker="x", s=18, color="0.6", label=repeat_label)
        values += [first, second]
    for (label, predicted), marker in zip(predictions.items(), MARKERS):
        predicted = np.asarray(predicted, dtype=np.float64)
        ax.scatter(measured, predicted, marker=marker, s=16, alpha=0.75, label=label)
        values.append(predicted)
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    low, high = (float(finite.min()) * 0.95, float(finite.max()) * 1.05) if finite.size else (0.0, 1.0)
    line = np.array([low, high])
    ax.plot(line, line, color="k", linewidth=1.0, label="y = x")
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", alpha=0.5, label="+-10 %")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, linewidth=0.3)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    safewrite.save_figure(fig, target)
    return target
