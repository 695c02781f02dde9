"""Wall time of one 8-trial ``mobilekit tune`` study with 1 worker vs 2 local worker processes (threads split:
2 torch threads in all), measured in one run on this machine. Trials are short searches (digits, Pixel 1
table, 80 ms target, 1 search epoch of 2 steps, no final training, no export: the fixed cost of a trial
-- data, supernet, BN re-calibration, evaluation, plots -- dominates, as it would not in a real study); the same sampler seed.

    nice python bench/tune_workers.py [--trials 8] [--order 1 2] [--out runs/bench-tune-workers]
    python bench/tune_workers.py --smoke    # seconds: 2 one-step trials per worker count, a temp folder

Equivalent commands (one per worker count):
    mobilekit tune --config search/pixel1-80ms.toml --param lambda:log:1e-2:10 --trials 8 --sampler random \
        --set epochs=1 --set steps_per_epoch=2 --set final_epochs=0 --set batch_size=16 --set export=none \
        --threads 2 --workers N --out runs/bench-tune-workers/wN
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

from mobilekit.tune import TuneConfig, parse_param, run_tune


REPO = Path(__file__).resolve().parents[1]
SETS = {"epochs": 1, "steps_per_epoch": 2, "final_epochs": 0, "batch_size": 16, "export": (),
        "train_resolution": 32}
# --smoke: one search step on a 20-image folder (mobilekit.testing.tiny_images: a few validation / test images, so
# evaluation and BN re-calibration cost next to nothing), no loader workers, no event files: the code path, not a figure
SMOKE_SETS = {**SETS, "epochs": 1, "steps_per_epoch": 1, "batch_size": 8, "workers": 0, "tensorboard": False}


def smoke_sets(tmp: str) -> dict:
    from mobilekit.testing.tiny_images import write_image_folder

    return {**SMOKE_SETS, "data": f"folder:{write_image_folder(Path(tmp) / 'images')}"}


def trial_rows(out: Path) -> list[dict]:
    with (out / "trials.csv").open() as handle:
        return [dict(row, duration_s=float(row["duration_s"] or 0)) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-tune-workers"))
    parser.add_argument("--order", type=int, nargs="+", default=[1, 2],
                        help="worker counts in the order they run (e.g. 2 1 to check for drift in the machine's load)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: 2 one-step trials with 1 and 2 workers in a temporary --out (no figure)")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="mobilekit-smoke-") as tmp:
            args.trials, args.order, args.out = 2, [1, 2], tmp + "/out"
            run(args, smoke_sets(tmp))
        return
    run(args, SETS)


def run(args: argparse.Namespace, sets: dict) -> None:
    results = {}
    for workers in args.order:
        out = Path(args.out) / f"w{workers}"
        if out.exists() and (out / "study.db").exists():
            shutil.rmtree(out)            # our own earlier bench output: a fresh study each time
        config = TuneConfig(out=str(out), recipe=str(REPO / "search" / "pixel1-80ms.toml"),
                            params=(parse_param("lambda:log:1e-2:10"),), sets=dict(sets), trials=args.trials,
                            sampler="random", workers=workers, threads=2)
        started = time.perf_counter()
        result = run_tune(config)
        elapsed_s = time.perf_counter() - started
        durations = [round(t["duration_s"]) for t in trial_rows(out)]
        results[workers] = {"wall_s": round(elapsed_s, 1), "trials": result["trials"], "trial_s": durations}
        print(f"{workers} worker(s): {args.trials}-trial study in {elapsed_s:.1f} s ({result['trials']}); "
              f"trial durations {durations} s", flush=True)
    ratio = results[1]["wall_s"] / results[2]["wall_s"]
    print(f"speed-up of 2 workers over 1: {ratio:.2f}x")
    path = Path(args.out) / f"result-{'-'.join(map(str, args.order))}.json"
    path.write_text(json.dumps({"results": results, "speedup": ratio}, indent=2))


if __name__ == "__main__":
    main()
