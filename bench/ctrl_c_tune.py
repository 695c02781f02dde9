"""Does Ctrl-C stop ``mobilekit tune``? Start a tune of short trials, send SIGINT at a random moment of its first
trials, and count how it ended: exit 130 with the one ``interrupted`` line is right; exit 0 means the interrupt was
dropped and the study ran on (Python raised ``KeyboardInterrupt`` inside a garbage-collector callback, which it
ignores); a negative code means the interpreter killed itself by SIGINT after mobilekit printed its line.

    python bench/ctrl_c_tune.py [--runs 20] [--max-delay-s 8] [--seed 0] [--out runs/bench-ctrl-c]
    python bench/ctrl_c_tune.py --smoke     # one run on a 20-image folder in a temporary folder

How often the interrupt was dropped depends on how often SIGINT lands in a collection, i.e. near the end of a
trial (Optuna collects after each one). Measured on 2026-12-06 on the loaded 2-core host, before
mobilekit/interrupts.py (commit 228c074): 1 of 15 runs exited 0 with this script at ``--max-delay-s 8``, and 6 of 22
with the tests' smaller synthetic table (trials of ~1 s, SIGINT within 2 s); after: 20 of 20 at
``--max-delay-s 2`` and 25 of 25 with the synthetic table exited 130.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
SETS = {"epochs": 3, "steps_per_epoch": 1, "final_epochs": 0, "batch_size": 16, "export": "none",
        "train_resolution": 32, "threads": 1}


def one_run(out: Path, sets: dict, delay_s: float) -> tuple[int, str]:
    """Exit code and stderr of one tune interrupted ``delay_s`` s after its first trial logged a step."""
    args = [sys.executable, "-m", "mobilekit", "tune", "--config", str(REPO / "search" / "pixel1-80ms.toml"),
            "--out", str(out), "--param", "lambda:log:1e-3:1", "--trials", "3", "--sampler", "random",
            "--no-progress", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    # as a terminal user's shell starts it: SIGINT not ignored (a background job's shell ignores it)
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (out / "tune" / "trial-0000" / "metrics.jsonl").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            return process.wait(), "the tune never started trial 0: " + (process.stderr.read() or "")[-500:]
        time.sleep(0.05)
    time.sleep(delay_s)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-delay-s", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-ctrl-c"))
    parser.add_argument("--smoke", action="store_true", help="one run on a 20-image folder, a temporary folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="mobilekit-ctrl-c-") as tmp:
        sets, base = dict(SETS), Path(args.out)
        if args.smoke:
            from mobilekit.testing.tiny_images import write_image_folder

            sets.update(data=f"folder:{write_image_folder(Path(tmp) / 'images')}", batch_size=8)
            args.runs, base = 1, Path(tmp) / "out"
        base.mkdir(parents=True, exist_ok=True)
        outcomes: collections.Counter[int] = collections.Counter()
        for run in range(args.runs):
            out = Path(tempfile.mkdtemp(prefix=f"run{run}-", dir=base))   # a fresh folder: a fresh study
            delay_s = rng.uniform(0.0, args.max_delay_s)
            code, err = one_run(out, sets, delay_s)
            outcomes[code] += 1
            print(f"run {run}: SIGINT {delay_s:.2f} s into trial 0 -> exit {code}: {' | '.join(err.split(chr(10)))[-200:]}",
                  flush=True)
    print("exit codes:", ", ".join(f"{code}: {n}" for code, n in sorted(outcomes.items())),
          f"({outcomes[130]} of {args.runs} stopped with 130)")
    return 0 if outcomes[130] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
