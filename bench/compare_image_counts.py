"""The images each searcher really consumes in a `mobilekit compare` cell, counted, against its budget rule.

Every method (or ``--variant``) runs one search with the settings the comparison would give it (one torch thread,
export off); :class:`mobilekit.compare.counting.ImageCounter` counts the images entering the network with autograd
on (gradient steps: search + final training) and, inside the search, with autograd off (forward-only: candidate
scoring, BN recalibration). Prints a Markdown table in passes over the train split, the rule's nominal figures
beside the counted ones.

    python bench/compare_image_counts.py [--table latency_tables/pixel1-spnas.json] [--target-ms 80]
        [--data digits] [--train-subset 100] [--batch-size 20] [--budget 4] [--final-share 0.5]
        [--methods single-path,...] [--variant NAME=METHOD:KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import torch

    from mobilekit.compare import CompareSettings
    from mobilekit.compare.budget import forward_only_images
    from mobilekit.compare.counting import ImageCounter
    from mobilekit.compare.run import search_config
    from mobilekit.data import load_dataset
    from mobilekit.search import run_search
    from mobilekit.search.registry import METHODS, get_method

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--train-subset", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--final-share", type=float, default=0.5)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--smoke", action="store_true", help="seconds-long check: single-path, 40 images, budget 2")
    args = parser.parse_args()
    if args.smoke:
        args.methods, args.train_subset, args.batch_size, args.budget = "single-path", 40, 10, 2
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        settings = CompareSettings(table=args.table, target_ms=args.target_ms, out=str(Path(tmp) / "cmp"),
                                   data=args.data, methods=args.methods, seeds=1, budget_epochs=args.budget,
                                   final_share=args.final_share, retrain_epochs=1, protocol_samples=0,
                                   train_subset=args.train_subset, batch_size=args.batch_size, variants=args.variant)
        splits = load_dataset(args.data, settings.train_resolution, seed=0, train_subset=args.train_subset)
        n_train, n_val = len(splits.train), len(splits.val)
        print(f"{args.data}: {n_train} train / {n_val} validation images, batch {args.batch_size}, budget "
              f"{args.budget} (final share {args.final_share:g}), {Path(args.table).name} at {args.target_ms:g} ms\n")
        print("| method | rule: images (epochs) | counted: gradient images (epochs) | forward-only, formula "
              "(epochs) | forward-only, counted (epochs) | wall s |")
        print("|---|---|---|---|---|---|")
        for name in settings.methods:
            config, facts = search_config(settings, name, 0)
            started = time.perf_counter()
            with ImageCounter().counting(get_method(config.method).load()) as counter:
                summary = run_search(config)
            formula = forward_only_images(config.method, config, summary, n_train, n_val, config.out)
            print(f"| {name} | {facts['images_epochs']:g} | {counter.gradient / n_train:g} | "
                  f"{'–' if formula is None else f'{formula / n_train:g}'} | {counter.forward_only / n_train:g} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
