"""Run-folder plots (matplotlib, Agg): CE and R over the search (as in Single-Path NAS, Fig. 5) and the final
architecture's layers with their table latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobilekit import safewrite
from mobilekit.space import Architecture


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_search(records: list[dict[str, Any]], target_ms: float, path: str | Path, title: str = "") -> Path:
    """Write :func:`search_figure` of ``records`` (``search.png``)."""
    return _write_figure(search_figure(records, target_ms, title), path)


def _write_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` at ``path`` (PNG, 110 dpi, through :mod:`mobilekit.safewrite`) and close it."""
    path = Path(path)
    safewrite.save_figure(fig, path, dpi=110)
    _pyplot().close(fig)
    return path


def search_figure(records: list[dict[str, Any]], target_ms: float, title: str = "") -> Any:
    """Two panels over search steps: CE (and accuracy) of the training batches with the per-epoch validation
    loss and accuracy (an epoch's last record's ``val_loss`` / ``val_accuracy``, as markers), and R (ms) with the
    target, the [0.9T, T] window and λ. The matplotlib figure (the caller closes it)."""
    plt = _pyplot()
    steps = [r["step"] for r in records]
    fig, (ax_ce, ax_r) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if steps:
        ax_ce.plot(steps, [r["ce"] for r in records], lw=1, color="tab:blue", label="CE")
        losses = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        if losses:
            ax_ce.plot(*zip(*losses), marker="s", lw=1.2, color="navy", label="validation loss")
        ax_acc = ax_ce.twinx()
        ax_acc.plot(steps, [r.get("accuracy", float("nan")) for r in records], lw=0.8, color="tab:green", alpha=0.6)
        validated = [(r["step"], r["val_accuracy"]) for r in records if r.get("val_accuracy") is not None]
        if validated:
            ax_acc.plot(*zip(*validated), marker="o", lw=1.2, color="darkgreen", label="validation accuracy")
        ax_acc.set_ylabel("accuracy (batch; validation per epoch)", color="tab:green")
        if "runtime_ms" in records[0]:
            ax_r.plot(steps, [r["runtime_ms"] for r in records], lw=1, color="tab:orange", label="R in the loss")
        if "runtime_hard_ms" in records[0]:
            ax_r.plot(steps, [r["runtime_hard_ms"] for r in records], lw=1, color="tab:red", ls="--",
                      label="R of the current architecture")
        if "lambda" in records[0]:
            ax_lam = ax_r.twinx()
            ax_lam.plot(steps, [r["lambda"] for r in records], lw=0.8, color="gray", alpha=0.6, label="λ")
            ax_lam.set_ylabel("λ", color="gray")
    ax_r.axhline(target_ms, color="black", lw=1, label=f"target {target_ms:g} ms")
    ax_r.axhspan(0.9 * target_ms, target_ms, color="green", alpha=0.1, label="[0.9T, T]")
    ax_ce.set_ylabel("cross-entropy (batch; validation per epoch)")
    ax_r.set_ylabel("runtime (ms)")
    ax_r.set_xlabel("search step")
    handles, labels = _legend_entries(fig, ax_ce)
    if handles:                                       # a method that records no labelled series gets no legend
        ax_ce.legend(handles, labels, loc="upper right", fontsize=8)
    handles, labels = _legend_entries(fig, ax_r)
    ax_r.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(title or "search")
    fig.tight_layout()
    return fig


def _legend_entries(fig: Any, ax: Any) -> tuple[list, list]:
    """The labelled series of ``ax`` and of its twin axes (those sharing its position), for one legend."""
    handles, labels = [], []
    for other in fig.axes:
        if other is ax or other.get_position().bounds == ax.get_position().bounds:
            h, l = other.get_legend_handles_labels()
            handles += h
            labels += l
    return handles, labels


KERNEL_COLORS = {3: "tab:blue", 5: "tab:orange", 7: "tab:red"}


def plot_architecture(arch: Architecture, layer_ms: list[float | None], path: str | Path, title: str = "") -> Path:
    """One bar per layer position: height = table latency (ms), colour = kernel, hatch = expansion 6, label = type."""
    return _write_figure(architecture_figure(arch, layer_ms, title), path)


def architecture_figure(arch: Architecture, layer_ms: list[float | None], title: str = "") -> Any:
    """The matplotlib figure of :func:`plot_architecture` (the caller closes it; TensorBoard's image per epoch)."""
    plt = _pyplot()
    layers = arch.layers()
    fig, ax = plt.subplots(figsize=(10, 4))
    for spec, ms in zip(layers, layer_ms):
        op = spec.op
        height = ms if ms is not None else 0.0
        if op.is_skip:
            ax.bar(spec.index, max(height, 0.05), color="lightgray", edgecolor="gray")
        else:
            ax.bar(spec.index, height, color=KERNEL_COLORS.get(op.kernel, "tab:purple"),
                   hatch="//" if op.expansion >= 6 else "", edgecolor="black", lw=0.5,
                   alpha=1.0 if spec.position.searchable else 0.4)
        ax.text(spec.index, height, op.name.replace("ir_", ""), rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks([s.index for s in layers])
    ax.set_xlabel("layer position")
    ax.set_ylabel("table latency (ms)")
    ax.set_title(title or arch.to_string()[:120])
    ax.margins(y=0.35)
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=f"k{k}") for k, c in KERNEL_COLORS.items() if any(s.op.kernel == k for s in layers)]
    handles += [Patch(facecolor="white", edgecolor="black", hatch="//", label="e6"),
                Patch(color="lightgray", label="skip")]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
