"""AutoHAS search cost against one training of the derived network (the paper: comparable to training one model).

Runs ``mobilekit search --method autohas`` with ``final_epochs = epochs`` (the derived network trained for as many
steps as the search took, with the searched hyper-parameters) and prints ``search_s / final_train_s``, both
measured in the same run by the engine's phase timers (one torch thread). Each AutoHAS step computes two
forward/backward passes of one sampled path (training gradient, validation loss of the mixed temporary weights)
plus the temporary weights' element-wise steps (m_lr x m_wd of them in the backward pass), so the ratio is expected
near 2-3 on a CPU.

    python bench/autohas_cost.py [--table latency_tables/pixel1-spnas.json] [--target-ms 80] [--epochs 2]
                                 [--steps-per-epoch 10] [--estimator gumbel] [--weight-sharing entangled]
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
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--estimator", default="gumbel", choices=("gumbel", "reinforce"))
    parser.add_argument("--weight-sharing", default="entangled", choices=("entangled", "separate"))
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 epoch of 2 steps, batch 16, 1 seed")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.batch_size = 1, 2, 16
        if hasattr(args, "seeds"):
            args.seeds, args.final_epochs, args.trials, args.methods = "0", 1, 1, "autohas,single-path"

    from mobilekit.search import make_config
    from mobilekit.search.run import run_search

    with tempfile.TemporaryDirectory() as out:
        config = make_config(None, method="autohas", table=args.table, target_ms=args.target_ms, out=out,
                             data=args.data, epochs=args.epochs, final_epochs=args.epochs,
                             steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, export=(), threads=1,
                             estimator=args.estimator, weight_sharing=args.weight_sharing)
        summary = run_search(config)
    steps = summary["search_steps"]
    print(f"autohas ({args.estimator}, {args.weight_sharing} weights) on {args.data}, target {args.target_ms:g} ms, {steps} steps of batch "
          f"{args.batch_size}: search {summary['search_s']:.1f} s, training the derived network for the same steps "
          f"{summary['final_train_s']:.1f} s")
    print(f"search cost / one training of the derived network: {summary['search_s'] / summary['final_train_s']:.2f}x")
    print(f"derived {summary['derived_ms']:.1f} ms -> {summary['predicted_ms']:.1f} ms after "
          f"{len(summary['repairs'])} repair(s); lr stages {summary['final_hyperparameters'].get('lr_stages')}, "
          f"weight decay {summary['final_hyperparameters']['weight_decay']:.3g}")


if __name__ == "__main__":
    main()
