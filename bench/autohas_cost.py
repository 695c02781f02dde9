"""AutoHAS search cost against plain training (the paper: comparable to training one model; the issue's goal:
<= 2.0x with the Gumbel estimator, <= 1.5x with REINFORCE).

Runs ``mobilekit search --method autohas`` (one torch thread, export off) and, like for like, times every search
step against one plain training step of **the same sampled path on the same batch** (forward, backward, momentum-SGD
step of a copy of the supernet with that path active), both as the thread's CPU time (``time.thread_time``, so
other jobs on a shared machine do not enter the ratio). Both steps take one training batch of the same size, so the
ratio is also the cost per training image (an AutoHAS step reads one validation batch on top). Prints the median
over the steps after the first two (warm-up).

Each estimator is run twice in the same process: ``per-basis`` computes one optimiser direction per
weight-decay basis for the temporary weights (what the search did before; still the path for Adam, whose L2 term
is not affine in the weight decay), ``affine`` the flat direction ``A + wd c W`` with two inner products for all
bases (:func:`mobilekit.search.temporary_weights.affine_direction`, the default for sgd and adamw). The
wall-clock ratio ``search_s / final_train_s`` of each run (training the *derived* network for as many steps) is
printed too; it depends on which network was derived, so it is not like for like.

    python bench/autohas_cost.py [--table latency_tables/pixel1-spnas.json] [--target-ms 80] [--epochs 2]
                                 [--steps-per-epoch 10] [--estimators gumbel,reinforce] [--weight-sharing entangled]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a profile.py, which would shadow the standard library's profile module (torch imports cProfile).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import copy
import statistics
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("per-basis", "affine")


def timed_run(args, estimator: str, variant: str) -> dict:
    """One search; returns the per-step CPU times (s) of the search steps and of the plain steps, and the summary."""
    import torch
    import torch.nn.functional as F

    from mobilekit.search import make_config
    from mobilekit.search.methods import autohas
    from mobilekit.search.run import run_search
    from mobilekit.search.training import make_optimizer

    search_cpu: list[float] = []
    plain_cpu: list[float] = []
    twin: dict = {"wall_s": 0.0}
    original_step, original_affine = autohas.AutoHASPhase.step, autohas.affine_direction

    def step(self, epoch, step_index, x, y):
        started = time.thread_time()
        record = original_step(self, epoch, step_index, x, y)
        search_cpu.append(time.thread_time() - started)
        wall = time.perf_counter()
        if "net" not in twin:                # a copy of the supernet: the plain steps leave the search alone
            twin["net"] = copy.deepcopy(self.net)
            twin["opt"] = make_optimizer("sgd", twin["net"].weight_parameters(), 0.05, 1e-4)
        net, opt = twin["net"], twin["opt"]
        net.fix(self.net.active())           # the path this search step sampled
        net.train()
        started = time.thread_time()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        plain_cpu.append(time.thread_time() - started)
        twin["wall_s"] += time.perf_counter() - wall    # inside the phase's timer: taken off search_s below
        return record

    autohas.AutoHASPhase.step = step
    if variant == "per-basis":
        autohas.affine_direction = lambda *a, **k: None
    try:
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as out:
            config = make_config(None, method="autohas", table=args.table, target_ms=args.target_ms, out=out,
                                 data=args.data, epochs=args.epochs, final_epochs=args.epochs,
                                 steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, export=(),
                                 threads=1, estimator=estimator, weight_sharing=args.weight_sharing,
                                 train_resolution=32)
            summary = run_search(config)
    finally:
        autohas.AutoHASPhase.step, autohas.affine_direction = original_step, original_affine
    return {"search": search_cpu, "plain": plain_cpu, "summary": summary,
            "search_s": summary["search_s"] - twin["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "latency_tables" / "pixel1-spnas.json"))
    parser.add_argument("--target-ms", type=float, default=80.0)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--estimators", default="gumbel,reinforce", help="comma-separated: gumbel, reinforce")
    parser.add_argument("--weight-sharing", default="entangled", choices=("entangled", "separate"))
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 epoch of 3 steps, batch 16, gumbel only")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.batch_size, args.estimators = 1, 3, 16, "gumbel"
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if not estimators or any(e not in ("gumbel", "reinforce") for e in estimators):
        print(f"--estimators {args.estimators!r}: use gumbel and/or reinforce, e.g. gumbel,reinforce", file=sys.stderr)
        sys.exit(2)

    skip = 2 if args.epochs * args.steps_per_epoch > 4 else 1
    print(f"autohas ({args.weight_sharing} weights) on {args.data}, target {args.target_ms:g} ms, "
          f"{args.epochs} x {args.steps_per_epoch} steps of batch {args.batch_size}, one torch thread; CPU time per "
          f"step, median over steps {skip + 1}..")
    print(f"{'estimator':<10} {'directions':<10} {'plain step':>11} {'search step':>12} {'ratio':>6}   "
          f"wall search / derived-network training")
    ratios: dict[tuple[str, str], float] = {}
    for estimator in estimators:
        for variant in VARIANTS:
            result = timed_run(args, estimator, variant)
            search = statistics.median(result["search"][skip:])
            plain = statistics.median(result["plain"][skip:])
            ratios[estimator, variant] = search / plain
            s = result["summary"]
            print(f"{estimator:<10} {variant:<10} {1000 * plain:>8.1f} ms {1000 * search:>9.1f} ms "
                  f"{search / plain:>5.2f}x   {result['search_s']:.1f} s / {s['final_train_s']:.1f} s = "
                  f"{result['search_s'] / s['final_train_s']:.2f}x (derived {s['derived_ms']:.1f} ms, "
                  f"{len(s['repairs'])} repair(s))", flush=True)
    for estimator in estimators:
        before, after = ratios[estimator, "per-basis"], ratios[estimator, "affine"]
        print(f"{estimator}: search step / plain step of the same path {before:.2f}x (per-basis directions) -> "
              f"{after:.2f}x (affine)")


if __name__ == "__main__":
    main()
