"""Quality at equal budget: single-path vs random search vs multi-path on digits at the same target.

Every method gets the same search epochs and the same final training on the same data; the random baseline
splits its search epochs over its candidates. Prints test accuracy mean +- std over the seeds, the predicted
latency and the search time. Defaults are small (about 10 minutes on 2 cores); digits is easy, so differences
of a point or two are within the seed spread.

    python bench/quality.py [--target 80] [--seeds 5] [--epochs 2] [--steps-per-epoch 10] [--final-epochs 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a profile.py, which would shadow the standard library's profile module (torch imports cProfile).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import statistics
import tempfile
import time

from mobilekit.search import make_config, run_search

REPO = Path(__file__).resolve().parents[1]
METHODS = ("single-path", "random", "multipath")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target", type=float, default=80.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=8)
    parser.add_argument("--final-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(f"settings: target {args.target:g} ms on {args.table}; digits at 32x32; search {args.epochs} epochs x "
          f"{args.steps_per_epoch} steps, final training {args.final_epochs} epochs (inheriting the search "
          f"weights), batch {args.batch_size}, seeds 0-{args.seeds - 1}; random: 2 candidates")
    started = time.perf_counter()
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for method in METHODS:
                config = make_config(table=args.table, target_ms=args.target, out=f"{tmp}/{method}-{seed}",
                                     method=method, seed=seed, epochs=args.epochs,
                                     steps_per_epoch=args.steps_per_epoch, final_epochs=args.final_epochs,
                                     batch_size=args.batch_size, random_samples=2, export=())
                results[method].append(run_search(config))
            print(f"seed {seed}: " + ", ".join(f"{m} {results[m][-1]['test_accuracy']:.3f}" for m in METHODS),
                  flush=True)
    print(f"\n{'method':<12} {'test accuracy':>18} {'val accuracy':>18} {'predicted ms':>14} {'search s':>9}")
    for method in METHODS:
        runs = results[method]

        def mean_std(key: str) -> str:
            values = [r[key] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} +- {spread:.3f}"

        print(f"{method:<12} {mean_std('test_accuracy'):>18} {mean_std('val_accuracy'):>18} "
              f"{statistics.mean(r['predicted_ms'] for r in runs):>14.1f} "
              f"{statistics.mean(r['search_s'] for r in runs):>9.1f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
