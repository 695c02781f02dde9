"""Target hit: does a single-path search land in [0.9 T, T]? 5 seeds x 3 targets on the Pixel 1 table.

Prints, per target, how many searches derived an architecture inside the window by themselves (before the
greedy repair) and after it, with the derived latencies. Shortened searches (80 steps of 32 digits at 32x32
instead of the default 152 of 64) run two at a time (one torch thread each) so the bench stays within about 10
minutes on 2 cores; pass --epochs / --steps-per-epoch / --workers for other settings.

    python bench/target_hit.py [--targets 60 80 100] [--seeds 5] [--epochs 8] [--steps-per-epoch 10]
    python bench/target_hit.py --smoke      # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import tempfile
import time
from pathlib import Path

from mobilekit.search import make_config, run_search


REPO = Path(__file__).resolve().parents[1]


def search(job: tuple) -> dict:
    """One search (in a worker process): returns its summary."""
    table, target, seed, args, tmp = job
    config = make_config(table=table, target_ms=target, out=f"{tmp}/t{target:g}-s{seed}", seed=seed,
                         epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                         final_epochs=0, export=(), relax=args.relax, threads=1, train_resolution=32)
    return run_search(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--targets", type=float, nargs="+", default=[60.0, 80.0, 100.0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--relax", default="sigmoid")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="seconds: one target, one seed, 1 epoch x 2 steps")
    args = parser.parse_args()
    if args.smoke:
        args.targets, args.seeds, args.epochs, args.steps_per_epoch, args.batch_size, args.workers = \
            [80.0], 1, 1, 2, 8, 1
    print(f"settings: single-path ({args.relax}), table {args.table}, digits at 32x32, {args.epochs} epochs x "
          f"{args.steps_per_epoch} steps, batch {args.batch_size}, seeds 0-{args.seeds - 1}, no final training, "
          f"{args.workers} searches at a time")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
        jobs = [(args.table, target, seed, args, tmp) for target in args.targets for seed in range(args.seeds)]
        summaries = list(pool.map(search, jobs))
    for i, target in enumerate(args.targets):
        runs = summaries[i * args.seeds:(i + 1) * args.seeds]
        derived = [r["derived_ms"] for r in runs]
        inside = sum(0.9 * target <= d <= target for d in derived)
        inside_final = sum(0.9 * target <= r["predicted_ms"] <= target for r in runs)
        rows.append((inside, inside_final))
        print(f"target {target:g} ms: derived inside [0.9T, T] {inside}/{args.seeds}, after repair "
              f"{inside_final}/{args.seeds}; derived ms {', '.join(f'{d:.1f}' for d in derived)} "
              f"(mean |derived - 0.95T| {statistics.mean(abs(d - 0.95 * target) for d in derived):.1f} ms)")
    total = len(args.targets) * args.seeds
    print(f"overall: {sum(r[0] for r in rows)}/{total} derived inside [0.9T, T] by the search alone, "
          f"{sum(r[1] for r in rows)}/{total} after repair ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
