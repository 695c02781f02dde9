"""``mobilekit compare``: every method at one latency target under the same budget, over several seeds, plus the
random-search protocol; a thin layer over :func:`mobilekit.compare.run_comparison`."""

from __future__ import annotations

import argparse
from pathlib import Path


from mobilekit.defaults import DEFAULT_DATA


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare searchers at one latency target under the same training budget",
        description="Run every --methods searcher for --seeds seeds at --target-ms with the same budget (training "
                    "images seen, search + final training), retrain every found architecture with one fixed "
                    "recipe, add the random-search protocol (random architectures in [0.95 T, T]), and write "
                    "results.json/.csv/.md and accuracy_latency.png into --out. Rerun the same command to resume.")
    add = parser.add_argument
    add("--table", required=True, help="latency table JSON (e.g. latency_tables/pixel1-spnas.json)")
    add("--target-ms", type=float, required=True, help="latency target in ms")
    add("--out", required=True, help="comparison folder, e.g. runs/compare-p80 (rerun to resume)")
    add("--data", default=DEFAULT_DATA,
        help=f"data set (default {DEFAULT_DATA}, the same as search; fashion-mnist, idx:DIR, cifar10:DIR, ...)")
    add("--methods", default="single-path,random,multipath",
        help="comma-separated searchers or --variant names (default: single-path,random,multipath)")
    add("--variant", action="append", default=[], dest="variants", metavar="NAME=METHOD[:KEY=VALUE]...",
        help="a method with option overrides, compared as its own row under its method's budget rule, e.g. "
             "--variant spos-small=spos:population=8:generations=2 (then name spos-small in --methods); repeatable. "
             "KEY: an option of METHOD or a common search option (see mobilekit search --help)")
    add("--seeds", type=int, default=5, help="seeds per method (default 5)")
    add("--budget", type=int, default=8, dest="budget_epochs",
        help="training images per method, search + final, in passes over the train split (default 8)")
    add("--final-share", type=float, default=0.5, help="share of the budget for the final training (default 0.5)")
    add("--retrain-epochs", type=int, default=4,
        help="epochs of the fixed retraining recipe (default 4; 0: no retraining, with --protocol-samples 0)")
    add("--protocol-samples", type=int, default=10,
        help="random architectures in [0.95T, T] trained with the fixed recipe (default 10, as in the paper; 0: none)")
    add("--recipe", default="legacy", choices=("standard", "legacy"),
        help="fixed retraining recipe: standard (AdamW 3e-3, weight decay 0.05, one-cycle, crop + flip, label "
             "smoothing 0.1) or legacy (weight decay 1e-4, no augmentation; default, as earlier comparisons)")
    add("--depth-matched", type=int, default=0,
        help="random networks per found network with its number of skipped layers, in [0.95T, T], trained with the "
             "recipe (default 0: none)")
    add("--reference", default="none",
        help="hand-designed reference trained with the recipe once per seed: mnasnet-b1, or none (default)")
    add("--train-subset", type=int, help="train on N training images (stratified, seeded)")
    add("--train-resolution", type=int, default=32, help="training resolution (default 32)")
    add("--batch-size", type=int, default=64, help="batch size of searches and retraining (default 64)")
    add("--steps-per-epoch", type=int, help="cap on batches per epoch everywhere (quick tries only)")
    add("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mobilekit.compare import CompareSettings, run_comparison

    settings = CompareSettings(
        table=args.table, target_ms=args.target_ms, out=args.out, data=args.data, methods=args.methods,
        seeds=args.seeds, budget_epochs=args.budget_epochs, final_share=args.final_share,
        retrain_epochs=args.retrain_epochs, protocol_samples=args.protocol_samples, train_subset=args.train_subset,
        train_resolution=args.train_resolution, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch,
        threads=args.threads, variants=args.variants, recipe=args.recipe, depth_matched=args.depth_matched,
        reference=args.reference)
    report = run_comparison(settings, log=print, progress=not args.no_progress)
    print(Path(settings.out, "results.md").read_text(), end="")
    print(f"{len(report['rows'])} cells; files in {settings.out}: results.json, results.csv, results.md, "
          "accuracy_latency.png")
    return 0
