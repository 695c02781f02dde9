"""Plan a comparison before running it: time a small slice on this machine and state the CPU-hours of the whole
``mobilekit compare`` at the given scale.

The slice (one torch thread, batch ``--batch-size``, 32x32): training steps of MnasNet-B1 with the fixed
``--recipe`` (what every retraining, protocol, depth-matched and reference cell and each method's final training
cost per image), single-path search steps (what a one-shot search costs per image; assumed for single-path,
autohas, diffautoml, spos, tnas-os and random's evaluation-free loop alike) and multi-path supernet steps (for
multipath). Images per cell follow the comparison's budget: search ``B - round(B * final_share)`` epochs, final
training ``round(B * final_share)``, retraining ``--retrain-epochs``, each over ``--train-subset`` images.
This is an estimate: methods with extra forward-only work (candidate scoring, BN recalibration) cost more, and the
host's load changes the rates; the timed rates are printed so the arithmetic can be checked.

    python bench/compare_plan.py --train-subset 10000 --budget 16 --retrain-epochs 15 --seeds 3 \\
        --protocol-samples 10 --depth-matched 1 --methods single-path,autohas,diffautoml,spos,tnas-os,multipath,random
    python bench/compare_plan.py --smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "latency_tables" / "pixel1-spnas.json"


def recipe_rate(recipe_name: str, batch_size: int, steps: int) -> float:
    """Images/s of the fixed recipe training MnasNet-B1 (32x32, 10 classes) on random images."""
    import torch
    from torch.utils.data import TensorDataset

    from mobilekit.compare.protocols import reference_network
    from mobilekit.compare.retrain import Recipe, retrain
    from mobilekit.latency_table import LatencyTable
    from mobilekit.space import get_space

    space = LatencyTable.load(TABLE).search_space()
    arch = reference_network("mnasnet-b1", get_space(space.name, width=space.width, resolution=32, num_classes=10))
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(batch_size * (steps + 1), 3, 32, 32, generator=gen),
                         torch.randint(0, 10, (batch_size * (steps + 1),), generator=gen))
    warm = retrain(arch, data, Recipe.named(recipe_name, epochs=1, batch_size=batch_size, steps_per_epoch=1), 0)
    timed = retrain(arch, data, Recipe.named(recipe_name, epochs=1, batch_size=batch_size, steps_per_epoch=steps), 0)
    return steps * batch_size / max(1e-9, timed["train_s"]) if warm else float("nan")


def search_rate(kind: str, batch_size: int, steps: int) -> float:
    """Images/s of ``kind`` (single-path, multipath) search steps, from bench/search_cost.py's builders."""
    spec = importlib.util.spec_from_file_location("search_cost", REPO / "bench" / "search_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    step, _ = module.build(kind, batch_size, str(TABLE))
    seconds = module.timed([step], steps)[0]
    return batch_size / seconds


def plan(args: argparse.Namespace, rates: dict[str, float]) -> tuple[float, list[str]]:
    """(CPU-seconds of the whole comparison, one line per part)."""
    final = round(args.budget * args.final_share)
    search = args.budget - final
    n, methods = args.train_subset, [m for m in args.methods.split(",") if m]
    lines, total = [], 0.0
    for method in methods:
        rate = rates["multipath"] if method == "multipath" else rates["single-path"]
        seconds = args.seeds * (search * n / rate + final * n / rates["recipe"] + args.retrain_epochs * n / rates["recipe"])
        lines.append(f"  {method:<12} {args.seeds} seeds: search {search} + final {final} + retrain "
                     f"{args.retrain_epochs} epochs -> {seconds / 3600:.2f} CPU-h")
        total += seconds
    others = {"random-protocol": args.protocol_samples, "depth-matched": args.depth_matched * len(methods) * args.seeds,
              "reference": args.seeds if args.reference else 0}
    for name, cells in others.items():
        seconds = cells * args.retrain_epochs * n / rates["recipe"]
        lines.append(f"  {name:<12} {cells} networks x {args.retrain_epochs} epochs -> {seconds / 3600:.2f} CPU-h")
        total += seconds
    return total, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=16, help="search + final epochs per method")
    parser.add_argument("--final-share", type=float, default=0.5)
    parser.add_argument("--retrain-epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--protocol-samples", type=int, default=10)
    parser.add_argument("--depth-matched", type=int, default=1)
    parser.add_argument("--reference", default="mnasnet-b1")
    parser.add_argument("--recipe", default="standard")
    parser.add_argument("--methods", default="single-path,autohas,diffautoml,spos,tnas-os,multipath,random")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each kind")
    parser.add_argument("--smoke", action="store_true", help="seconds: batch 4, 1 timed step")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.steps = 4, 1
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    rates = {"recipe": recipe_rate(args.recipe, args.batch_size, args.steps),
             "single-path": search_rate("single-path-init", args.batch_size, args.steps),
             "multipath": search_rate("multipath", args.batch_size, args.steps)}
    print(f"timed on this machine in {time.perf_counter() - started:.0f} s (one thread, batch {args.batch_size}, "
          f"{args.steps} steps each): {args.recipe} recipe on MnasNet-B1 {rates['recipe']:.1f} images/s, "
          f"single-path search {rates['single-path']:.1f} images/s (every subset on), multi-path supernet "
          f"{rates['multipath']:.1f} images/s")
    total, lines = plan(args, rates)
    print(f"plan: {args.train_subset} training images, budget {args.budget} epochs (final share "
          f"{args.final_share:g}), retraining {args.retrain_epochs} epochs, {args.seeds} seeds")
    print("\n".join(lines))
    print(f"total: {total / 3600:.1f} CPU-hours at one thread ({total / 3600 / 2:.1f} hours with two compare "
          "workers of one thread each on one folder)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
