"""λ found by ``mobilekit tune`` for 60, 80 and 100 ms on the Pixel 1 table with each sampler (gp, tpe, random)
at the same trial budget: short single-path searches on digits (fixed λ, steering off), eq. 19 objective.

Per target, one SQLite storage holds one study per sampler, so ``history.png`` in each target's folder draws the
best eq. 19 over trials per sampler (Single-Path NAS, Fig. 9 left). Prints a table of the best λ, its eq. 19,
validation accuracy and derived latency per (target, sampler).

    nice python bench/tune_lambda.py [--targets 60 80 100] [--trials 3] [--workers 2]
    python bench/tune_lambda.py --smoke     # seconds: one target, one random trial of one step, a temp folder

The searches are very short (2 epochs of 3 steps of 16 images, threshold_lr 0.05 so thresholds can move at
all in 6 steps, no final training: the accuracy is the derived network's with the supernet's weights) so 27
searches fit in the time a heavily shared 2-core machine gave; a real study would use the recipe's 8 epochs.
Each study is one command:
    mobilekit tune --config search/pixel1-80ms.toml --param lambda:log:1e-2:10 --trials 3 --sampler S \
        --startup-trials 2 --set target_ms=T --set epochs=2 --set steps_per_epoch=3 --set final_epochs=0 \
        --set batch_size=16 --set threshold_lr=0.05 --set export=none --workers 2 --threads 2 \
        --storage sqlite:///runs/bench-tune-lambda/pT/study.db --study pT-S --out runs/bench-tune-lambda/pT
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mobilekit.tune import TuneConfig, parse_param, run_tune


REPO = Path(__file__).resolve().parents[1]
SETS = {"epochs": 2, "steps_per_epoch": 3, "final_epochs": 0, "batch_size": 16, "threshold_lr": 0.05,
        "train_resolution": 32,
        "export": ()}
# --smoke: one search step on a 20-image folder (mobilekit.testing.tiny_images: a few validation / test images, so
# evaluation and BN re-calibration cost next to nothing), no loader workers, no event files: the code path, not a figure
SMOKE_SETS = {**SETS, "epochs": 1, "steps_per_epoch": 1, "batch_size": 8, "workers": 0, "tensorboard": False}


def smoke_sets(tmp: str) -> dict:
    from mobilekit.testing.tiny_images import write_image_folder

    return {**SMOKE_SETS, "data": f"folder:{write_image_folder(Path(tmp) / 'images')}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[60, 80, 100])
    parser.add_argument("--samplers", nargs="+", default=["gp", "tpe", "random"])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-tune-lambda"))
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: target 80, random sampler, 1 trial of 1 step, 1 worker, a temporary --out")
    args = parser.parse_args()
    sets = SETS
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="mobilekit-smoke-") as tmp:
            args.targets, args.samplers, args.trials, args.workers, args.out = [80], ["random"], 1, 1, tmp + "/out"
            run(args, smoke_sets(tmp))
        return
    run(args, sets)


def run(args: argparse.Namespace, sets: dict) -> None:
    rows = []
    print("target_ms sampler  best_lambda  eq19    val_acc  derived_ms  final_ms  wall_s", flush=True)
    for target in args.targets:
        out = Path(args.out) / f"p{target:g}"
        out.mkdir(parents=True, exist_ok=True)
        for sampler in args.samplers:
            config = TuneConfig(
                out=str(out), recipe=str(REPO / "search" / "pixel1-80ms.toml"),
                params=(parse_param("lambda:log:1e-2:10"),), sets={**sets, "target_ms": target},
                trials=args.trials, sampler=sampler, startup_trials=2, workers=args.workers, threads=2,
                storage=f"sqlite:///{out / 'study.db'}", study=f"p{target:g}-{sampler}")
            started = time.perf_counter()
            result = run_tune(config)
            wall_s = time.perf_counter() - started
            best = result.get("best") or {}
            row = {"target_ms": target, "sampler": sampler, "trials": result["trials"], "wall_s": round(wall_s, 1),
                   "lambda": best.get("params", {}).get("lambda"), "eq19": (best.get("values") or [None])[0],
                   "val_accuracy": best.get("val_accuracy"), "derived_ms": best.get("derived_ms"),
                   "final_ms": best.get("predicted_ms"), "run_folder": best.get("run_folder")}
            rows.append(row)
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            print(f"{target:9g} {sampler:7s} {fmt(row['lambda'], '11.4g')}  {fmt(row['eq19'], '.4f')}  "
                  f"{fmt(row['val_accuracy'], '.4f')}   {fmt(row['derived_ms'], '8.2f')}  "
                  f"{fmt(row['final_ms'], '7.2f')}  {wall_s:6.0f}", flush=True)
            (Path(args.out) / "result.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
