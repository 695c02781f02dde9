"""AutoHAS recovering from a bad default learning rate: 10x too small and 10x too large (the issue's check).

For each bad default ``lr_bad = lr_good x {0.1, 10}`` runs, at the same search steps, final training and latency
target (one torch thread, export off):

* ``autohas`` with ``--weight-lr lr_bad`` (its lr bases are ``lr_bad x multipliers``, 0.1..10, so the good value is
  a basis), reporting the derived per-stage learning rates and the deliverable's test accuracy;
* ``single-path`` trained with momentum SGD at ``lr_bad`` and at ``lr_good`` (the bad default and the good one).

Prints one row per run and the ratio derived lr / lr_good per stage. Full run (Fashion-MNIST, 10 000 training
images):

    python bench/autohas_recovery.py --data fashion-mnist --train-subset 10000 --epochs 3 --final-epochs 3

``--smoke``: digits, 1 epoch of 2 steps, seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a profile.py, which would shadow the standard library's profile module (torch imports cProfile).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import tempfile

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--good-lr", type=float, default=0.05, help="the good momentum-SGD learning rate")
    parser.add_argument("--smoke", action="store_true", help="seconds: digits, 1 epoch of 2 steps")
    args = parser.parse_args()
    if args.smoke:
        args.data, args.train_subset, args.epochs, args.final_epochs = "digits", None, 1, 1
        args.steps_per_epoch, args.batch_size = 2, 16

    from mobilekit.search import make_config
    from mobilekit.search.run import run_search

    common = dict(table=args.table, target_ms=args.target_ms, data=args.data, train_subset=args.train_subset,
                  epochs=args.epochs, final_epochs=args.final_epochs, steps_per_epoch=args.steps_per_epoch,
                  batch_size=args.batch_size, export=(), threads=1, seed=0, train_resolution=32)
    print("run                                   test_acc  lr (per stage) / good lr  weight decay")
    for factor in (0.1, 10.0):
        bad = args.good_lr * factor
        runs = [(f"autohas from lr {bad:.3g}", dict(method="autohas", weight_lr=bad)),
                (f"single-path sgd at bad lr {bad:.3g}", dict(method="single-path", optimizer="sgd", lr=bad)),
                (f"single-path sgd at good lr {args.good_lr:.3g}",
                 dict(method="single-path", optimizer="sgd", lr=args.good_lr))]
        for name, settings in runs:
            with tempfile.TemporaryDirectory() as out:
                summary = run_search(make_config(None, out=out, **common, **settings))
            hp = summary["final_hyperparameters"] or {}
            lrs = hp.get("lr_stages") or [hp.get("lr", float("nan"))]
            ratios = ", ".join(f"{v / args.good_lr:.2g}" for v in lrs)
            print(f"{name:<37} {summary['test_accuracy']:>8.3f}  {ratios:<24}  {hp.get('weight_decay', 0):.2g}",
                  flush=True)


if __name__ == "__main__":
    main()
