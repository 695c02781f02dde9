"""What the searchers of a `mobilekit compare` folder chose, and how single-path got there.

Reads the comparison's cells and each single-path run's metrics.jsonl (nothing is trained). Prints:
- the layer types of every method's found architectures, summed over seeds (and of the random protocol's);
- for single-path: how each layer's type changed during the search (a change straight from ``ir_k5_e6`` to
  ``skip`` in one step means every decision of that layer flipped together), the step at which R (the discrete
  architecture's table latency) first entered [0.9 T, T], and R at the end of the search.

    python bench/compare_trajectories.py /work/runs/compare-p80
    python bench/compare_trajectories.py --runs RUN_FOLDER [RUN_FOLDER ...]   # single-path `mobilekit search` runs
    python bench/compare_trajectories.py --smoke     # seconds: one tiny search in a temporary folder

With ``--runs`` it reads each run folder's summary.json and metrics.jsonl instead: the derived architecture's
layer types (before the repair into [0.9T, T]) and the delivered one's, the latencies, the accuracies, and the
same trajectory line.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def main(folder: str) -> None:
    root = Path(folder)
    cells = [json.loads(p.read_text()) for p in sorted((root / "cells").glob("*.json"))]
    target = json.loads((root / "compare.json").read_text())["target_ms"]
    by_method: dict[str, Counter] = {}
    for cell in cells:
        by_method.setdefault(cell["method"], Counter()).update(cell["arch"].split(","))
    print(f"layer types of the found architectures (target {target:g} ms; 20 searchable layers per network)")
    for method, counts in by_method.items():
        count = sum(1 for c in cells if c["method"] == method)
        print(f"  {method} ({count} runs): " + ", ".join(f"{t} {n}" for t, n in counts.most_common()))
    for cell in cells:
        if cell["method"] != "single-path":
            continue
        metrics = root / "runs" / f"single-path-s{cell['seed']}" / "metrics.jsonl"
        line = trajectory(metrics, target)
        if line:
            print(f"  single-path seed {cell['seed']}: {line}")


def trajectory(metrics: Path, target: float) -> str | None:
    """One line on a single-path search's metrics.jsonl: R (ms) at the start and end, the step R first entered
    [0.9 T, T], λ at the end, and the layer-type changes (how many went ir_k5_e6 -> skip in one step)."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    search = [r for r in records if r.get("phase") == "search"]
    if not search:
        return None
    changes, together = Counter(), 0
    previous = search[0]["arch"].split(",")
    for record in search[1:]:
        current = record["arch"].split(",")
        for before, after in zip(previous, current):
            if before != after:
                changes[f"{before}->{after}"] += 1
                together += before == "ir_k5_e6" and after == "skip"
        previous = current
    entered = next((r["step"] for r in search if 0.9 * target <= r["runtime_hard_ms"] <= target), None)
    return (f"R {search[0]['runtime_hard_ms']:.1f} -> {search[-1]['runtime_hard_ms']:.1f} ms over {len(search)} "
            f"steps; first inside [0.9T, T] at step {entered}; lambda at the end {search[-1]['lambda']:.2f}; "
            f"{sum(changes.values())} layer changes, {together} of them ir_k5_e6 -> skip in one step; most common: "
            + ", ".join(f"{k} {n}" for k, n in changes.most_common(4)))


def types(arch: str) -> str:
    """``type count, ...`` of an architecture string, most common first."""
    return ", ".join(f"{t} {n}" for t, n in Counter(arch.split(",")).most_common())


def runs(folders: list[str]) -> None:
    """The report for single-path run folders (``mobilekit search --out FOLDER``)."""
    for folder in folders:
        root = Path(folder)
        summary = json.loads((root / "summary.json").read_text())
        target = float(summary["target_ms"])
        print(f"{root} (target {target:g} ms): derived {summary['derived_ms']:.1f} ms, "
              f"{len(summary.get('repairs') or [])} repair(s) -> {summary['predicted_ms']:.1f} ms; "
              f"val accuracy {summary['val_accuracy']:.4f}, test accuracy {summary['test_accuracy']:.4f}")
        print(f"  derived: {types(summary['derived_arch'])}")
        print(f"  delivered: {types(summary['arch'])}")
        line = trajectory(root / "metrics.jsonl", target)
        if line:
            print(f"  {line}")


def smoke() -> None:
    """Seconds: one tiny single-path search (digits, 1 epoch x 4 steps) laid out as a comparison folder in a
    temporary folder, then the report on it."""
    import tempfile

    from mobilekit.search import make_config, run_search

    table = Path(__file__).resolve().parents[1] / "latency_tables" / "pixel1-spnas.json"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = make_config(table=str(table), target_ms=80.0, out=str(root / "runs" / "single-path-s0"),
                             epochs=1, steps_per_epoch=4, batch_size=8, final_epochs=0, export=(), threads=1,
                             train_resolution=32)
        summary = run_search(config)
        (root / "cells").mkdir()
        (root / "compare.json").write_text(json.dumps({"target_ms": 80.0}))
        (root / "cells" / "single-path-s0.json").write_text(
            json.dumps({"method": "single-path", "seed": 0, "arch": summary["derived_arch"]}))
        main(str(root))
        runs([str(root / "runs" / "single-path-s0")])


if __name__ == "__main__":
    if "--smoke" in sys.argv[1:]:
        smoke()
    elif sys.argv[1:2] == ["--runs"]:
        runs(sys.argv[2:])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "runs/compare-p80")
