"""The comparison's report: per-method mean ± std over seeds (sample std, ddof 1; 0 for a single run), the margin
of every method's retrained accuracy over the random-search protocol in protocol standard deviations, and the
files ``results.json``, ``results.csv``, ``results.md`` (the table) and ``accuracy_latency.png`` (test accuracy
against predicted latency, one colour per method).

Beside the budget (training images, nominal, :mod:`.budget`) the table shows each method's forward-only images
(candidate scoring, BN recalibration inside the search) in passes over the train split, and -- when a method
searched its final training's hyper-parameters (AutoHAS, random-has, tpe) -- the mean searched learning rate (a
per-stage schedule counts as its mean) and weight decay. A method (or variant) is a row of its own."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from mobilekit import safewrite
from mobilekit.compare.settings import DEPTH_MATCHED, PROTOCOL, CompareSettings
from mobilekit.jsonio import write_json_atomic

MEASURES = ("test_accuracy", "retrain_test_accuracy", "predicted_ms", "search_s", "total_s", "forward_only_epochs",
            "searched_lr", "searched_weight_decay", "repairs", "skipped_layers")
CSV_FIELDS = ("kind", "method", "base_method", "seed", "predicted_ms", "derived_ms", "skipped_layers", "within_window",
              "within_window_without_repair", "repairs", "test_accuracy", "val_accuracy", "retrain_test_accuracy",
              "retrain_val_accuracy", "search_s", "final_train_s", "total_s", "retrain_s", "search_epochs_nominal",
              "final_epochs", "images_epochs", "forward_only_images", "forward_only_epochs", "searched_lr",
              "searched_weight_decay", "cell_wall_s", "arch")


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """(mean, sample std) of the values, None when there are none; std 0 for one value."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(settings: CompareSettings, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-method aggregates (in the order of ``settings.methods``, then the protocol, the reference and the
    depth-matched rows). Each method's retrained accuracy gets its margin over the random-search protocol, over
    its own depth-matched networks and over the reference, each in that yardstick's sample standard deviation
    (``margin_over_protocol_std``, ``margin_over_depth_matched_std``, ``margin_over_reference_std``; absent when the
    yardstick has fewer than two runs or no spread)."""
    methods: dict[str, Any] = {}
    extra = [settings.reference] if getattr(settings, "reference", None) else []
    extra += [f"{DEPTH_MATCHED}:{m}" for m in settings.methods]
    for method in (*settings.methods, PROTOCOL, *extra):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        entry: dict[str, Any] = {"runs": len(mine), "seeds": sorted(r["seed"] for r in mine)}
        for measure in MEASURES:
            entry[measure] = mean_std([r.get(measure) for r in mine])
        entry["within_window"] = sum(bool(r["within_window"]) for r in mine)
        entry["within_window_without_repair"] = sum(bool(r["within_window_without_repair"]) for r in mine)
        entry["images_epochs"] = mine[0].get("images_epochs")
        entry["base_method"] = mine[0].get("base_method", method)
        methods[method] = entry
    def yardstick(name: str | None) -> tuple[float, float] | None:
        return methods.get(name, {}).get("retrain_test_accuracy") if name else None

    for method, entry in methods.items():
        ours = entry["retrain_test_accuracy"]
        if method not in settings.methods or not ours:
            continue
        for key, name in (("protocol", PROTOCOL), ("depth_matched", f"{DEPTH_MATCHED}:{method}"),
                          ("reference", getattr(settings, "reference", None))):
            other = yardstick(name)
            if other and other[1] > 0:
                entry[f"margin_over_{key}_std"] = (ours[0] - other[0]) / other[1]
    return methods


def _fmt(value: tuple[float, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value[0] * scale:.{digits}f} ± {value[1] * scale:.{digits}f}"


def _fmt_small(value: tuple[float, float] | None) -> str:
    return "–" if value is None else f"{value[0]:.2g} ± {value[1]:.1g}"


def markdown_table(settings: CompareSettings, methods: dict[str, Any]) -> str:
    """The README table: one row per method (or variant) plus the protocol, reference and depth-matched rows. A
    method's retrained accuracy carries its margins in the yardsticks' standard deviations (σ_protocol,
    σ_depth-matched, σ_reference). The searched lr / weight decay column appears when some method searched them."""
    searched = any(entry.get("searched_lr") for entry in methods.values())
    header = ["method", "runs", "deliverable test acc. %",
              f"retrained test acc. % ({getattr(settings, 'recipe', 'legacy')} recipe)", "predicted ms",
              "skipped layers", "in [0.9T, T] without repair", "repairs", "search s", "search + final s",
              "images (epochs)", "forward-only images (epochs)"] + (["searched lr / weight decay"] if searched else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, entry in methods.items():
        trained_only = method not in settings.methods
        margins = [f"{entry[key]:+.1f} σ_{label}" for key, label in
                   (("margin_over_protocol_std", "protocol"), ("margin_over_depth_matched_std", "depth-matched"),
                    ("margin_over_reference_std", "reference")) if entry.get(key) is not None]
        retrained = _fmt(entry["retrain_test_accuracy"], 100) + (f" ({', '.join(margins)})" if margins else "")
        images = entry.get("images_epochs")
        cells = [method, str(entry["runs"]), "–" if trained_only else _fmt(entry["test_accuracy"], 100), retrained,
                 _fmt(entry["predicted_ms"]), _fmt(entry.get("skipped_layers"), digits=1),
                 f"{entry['within_window_without_repair']}/{entry['runs']}",
                 "–" if trained_only else _fmt(entry.get("repairs"), digits=1),
                 "–" if trained_only else _fmt(entry["search_s"], digits=0), _fmt(entry["total_s"], digits=0),
                 ("retrain only: " if trained_only else "") + ("–" if images is None else f"{images:g}"),
                 "–" if trained_only else _fmt(entry.get("forward_only_epochs"))]
        if searched:
            cells.append("–" if not entry.get("searched_lr") else
                         f"{_fmt_small(entry['searched_lr'])} / {_fmt_small(entry.get('searched_weight_decay'))}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(settings: CompareSettings, rows: list[dict[str, Any]], path: Path) -> Path:
    """Test accuracy against predicted latency: the deliverables (left) and the retrained architectures (right),
    one colour per method, the window [0.9 T, T] shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [*settings.methods, PROTOCOL, *([settings.reference] if getattr(settings, "reference", None) else []),
               *[f"{DEPTH_MATCHED}:{m}" for m in settings.methods]]
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    panels = [("test_accuracy", "deliverable (what `mobilekit search` gives)")]
    if any(r.get("retrain_test_accuracy") is not None for r in rows):     # none with --retrain-epochs 0
        panels.append(("retrain_test_accuracy", "architecture alone (retrained, fixed recipe)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), sharey=True, squeeze=False)
    axes = list(axes[0])
    for ax, (key, title) in zip(axes, panels):
        ax.axvspan(0.9 * settings.target_ms, settings.target_ms, color="0.92", zorder=0)
        for method in methods:
            points = [(r["predicted_ms"], r[key]) for r in rows if r["method"] == method and r.get(key) is not None]
            if points:
                x, y = zip(*points)
                ax.scatter(x, np.array(y) * 100, color=colours[method], label=method, s=28,
                           marker="o" if method in settings.methods else "*" if method == settings.reference
                           else "x" if method == PROTOCOL else "+")
        ax.axvline(settings.target_ms, color="0.4", lw=1, ls="--")
        latencies = [r["predicted_ms"] for r in rows]
        ax.set_xlim(min(0.85 * settings.target_ms, min(latencies) - 1), max(1.02 * settings.target_ms, max(latencies) + 1))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("predicted latency (ms, from the table)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test accuracy on {settings.data} (%)")
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, labels, fontsize=8, loc="best")
    fig.suptitle(f"target {settings.target_ms:g} ms, budget {settings.budget_epochs} epochs, "
                 f"{Path(settings.table).name}", fontsize=10)
    fig.tight_layout()
    try:
        safewrite.write_with(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png")
    finally:
        plt.close(fig)
    return path


def write_report(settings: CompareSettings, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write results.json / .csv / .md and the plot into ``settings.out``; returns the results.json content."""
    out = Path(settings.out)
    methods = summarize(settings, rows)
    report = {"settings": settings.to_dict(),
              "budget": "same number of training images seen (search + final), in passes over the train split; "
                        "see mobilekit.compare.budget",
              "std": "sample standard deviation over seeds (ddof 1)",
              "methods": methods, "rows": rows}
    write_json_atomic(out / "results.json", report)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(out / "results.csv", buffer.getvalue())
    _write_text(out / "results.md", markdown_table(settings, methods))
    if rows:
        plot(settings, rows, out / "accuracy_latency.png")
    return report


def _write_text(path: Path, text: str) -> None:
    safewrite.write_text(path, text)
