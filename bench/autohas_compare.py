"""AutoHAS against single-path with default hyper-parameters and the joint random / TPE baselines, at the same
search epochs, the same final training and the same latency target (the issue's comparison, in short settings).

Each (method, seed) is one ``run_search`` (one torch thread, export off); the baselines get ``trials`` trials of
``epochs // trials`` epochs each, i.e. as many training steps as one search. Prints one row per run and the mean
test accuracy per method.

    python bench/autohas_compare.py [--table latency_tables/pixel1-spnas.json] [--target-ms 80] [--data digits]
                                    [--seeds 0,1,2] [--epochs 2] [--steps-per-epoch 10] [--final-epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
METHODS = ("autohas", "single-path", "random-has", "tpe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--final-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 epoch of 2 steps, batch 16, 1 seed")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.batch_size = 1, 2, 16
        if hasattr(args, "seeds"):
            args.seeds, args.final_epochs, args.trials, args.methods = "0", 1, 1, "autohas,single-path"

    from mobilekit.search import make_config
    from mobilekit.search.run import run_search

    accuracy: dict[str, list[float]] = {}
    print("method       seed  predicted_ms  in_window  test_acc  search_s  final_train_s  lr / stages, weight decay")
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            extra = {"trials": args.trials} if method in ("random-has", "tpe") else {}
            with tempfile.TemporaryDirectory() as out:
                config = make_config(None, method=method, table=args.table, target_ms=args.target_ms, out=out,
                                     data=args.data, epochs=args.epochs, final_epochs=args.final_epochs,
                                     steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, export=(),
                                     threads=1, seed=seed, train_resolution=32, **extra)
                s = run_search(config)
            hp = s["final_hyperparameters"] or {}
            lr = hp.get("lr_stages") or hp.get("lr")
            lr_text = ",".join(f"{v:.2g}" for v in lr) if isinstance(lr, list) else f"{lr:.2g}"
            accuracy.setdefault(method, []).append(s["test_accuracy"])
            print(f"{method:<12} {seed:>4}  {s['predicted_ms']:>12.1f}  {str(s['within_window']):>9}  "
                  f"{s['test_accuracy']:>8.3f}  {s['search_s']:>8.1f}  {s['final_train_s']:>13.1f}  "
                  f"{lr_text}, {hp.get('weight_decay', 0):.2g}", flush=True)
    print("\nmean test accuracy (min-max) per method:")
    for method, values in accuracy.items():
        print(f"  {method:<12} {statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f}) over "
              f"{len(values)} seed(s)")


if __name__ == "__main__":
    main()
