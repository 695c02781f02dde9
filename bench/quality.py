"""Quality at equal budget: single-path vs random search vs multi-path on digits at the same target.

Every method gets the same search epochs and the same final training (inheriting its search weights) on the
same data; the random baseline splits its search epochs over its 4 candidates. Prints test accuracy mean +- std
over the seeds, the predicted latency and the search time. Shortened settings (epochs of 10 batches of 32,
two runs at a time, one torch thread each) keep it near 10 minutes on 2 cores; digits is easy, so differences
of a point or two are within the seed spread.

    python bench/quality.py [--target 80] [--seeds 5] [--epochs 8] [--steps-per-epoch 10] [--final-epochs 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import tempfile
import time
from pathlib import Path

from mobilekit.search import make_config, run_search
from mobilekit.search.registry import METHODS as REGISTERED


REPO = Path(__file__).resolve().parents[1]
METHODS = tuple(REGISTERED)          # every registered searcher


def search(job: tuple) -> dict:
    """One run (in a worker process): returns its summary."""
    method, seed, args, tmp = job
    config = make_config(table=args.table, target_ms=args.target, out=f"{tmp}/{method}-{seed}", method=method,
                         seed=seed, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                         final_epochs=args.final_epochs, batch_size=args.batch_size, export=(), threads=1,
                         train_resolution=32)
    return run_search(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target", type=float, default=80.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--final-epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: single-path only, one seed, 1 epoch x 2 steps, 1 final epoch")
    args = parser.parse_args()
    if args.smoke:
        args.methods, args.seeds, args.epochs, args.steps_per_epoch, args.final_epochs, args.batch_size, \
            args.workers = ["single-path"], 1, 1, 2, 1, 8, 1
    print(f"settings: target {args.target:g} ms on {args.table}; digits at 32x32; search {args.epochs} epochs x "
          f"{args.steps_per_epoch} steps, final training {args.final_epochs} epochs x {args.steps_per_epoch} steps "
          f"(inheriting the search weights), batch {args.batch_size}, seeds 0-{args.seeds - 1}; random: 4 "
          f"candidates x {max(1, args.epochs // 4)} proxy epochs; {args.workers} runs at a time")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
        jobs = [(method, seed, args, tmp) for seed in range(args.seeds) for method in args.methods]
        summaries = list(pool.map(search, jobs))
    results = {m: [s for (method, _, _, _), s in zip(jobs, summaries) if method == m] for m in args.methods}
    print(f"{'method':<12} {'test accuracy':>18} {'val accuracy':>18} {'predicted ms':>14} {'search s':>9}")
    for method in args.methods:
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
