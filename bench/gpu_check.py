"""The CUDA paths end to end: a single-path search and its final training on Fashion-MNIST with bf16 and fp16
autocast (the fp16 run with the gradient scaler) in channels-last, printing search vs final-training images/s,
peak GPU memory of the single-path search against the multi-path supernet's, and the test accuracy reached.

    python bench/gpu_check.py [--train-subset N] [--epochs 2] [--final-epochs 2] [--batch-size 256]
    python bench/gpu_check.py --smoke        # on the CPU in seconds (digits, 32 images; precision is ignored)

Images/s of a phase: its steps x batch over the wall-clock time from its first to its last step (the ``on_step``
times). Peak memory: ``torch.cuda.max_memory_allocated`` over each run (reset before it); the multi-path
supernet runs ``--multipath-steps`` steps only (its memory, not its accuracy, is compared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "latency_tables" / "pixel1-spnas.json"


def run(method: str, precision: str, args: argparse.Namespace, out: Path, **extra) -> dict:
    """One ``run_search``; returns its summary with ``images_per_s`` per phase and ``peak_mib`` (CUDA only)."""
    import torch

    from mobilekit.search.config import make_config
    from mobilekit.search.run import run_search

    times: dict[str, list[float]] = defaultdict(list)
    cuda = torch.cuda.is_available() and not args.smoke
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    config = make_config(table=str(TABLE), target_ms=80.0, out=str(out), method=method, data=args.data,
                         train_subset=args.train_subset, epochs=args.epochs, final_epochs=args.final_epochs,
                         batch_size=args.batch_size, export="none", seed=0, train_resolution=32,
                         accelerator="cuda" if cuda else "cpu", mixed_precision=precision, **extra)
    summary = run_search(config, on_step=lambda record: times[record["phase"]].append(time.perf_counter()))
    if cuda:
        torch.cuda.synchronize()
    summary["images_per_s"] = {phase: (len(t) - 1) * args.batch_size / (t[-1] - t[0]) if len(t) > 1 else None
                               for phase, t in times.items()}
    summary["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train-subset", type=int, default=None, help="default: all 60 000 training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--final-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--multipath-steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="CPU, digits, 32 images, batch 16, 1 epoch each")
    args = parser.parse_args(argv)
    if args.smoke:
        args.data, args.train_subset, args.batch_size, args.epochs, args.final_epochs = "digits", 32, 16, 1, 1
        args.multipath_steps = 1
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "CPU (smoke)"
    print(f"device: {device}; single-path on {args.data} ({args.train_subset or 'all'} training images), Pixel 1 "
          f"table at 80 ms, batch {args.batch_size}, {args.epochs} search + {args.final_epochs} final epochs")
    single_peak = None
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("bf16", "fp16"):
            started = time.perf_counter()
            s = run("single-path", precision, args, Path(tmp) / f"sp-{precision}")
            rates = s["images_per_s"]
            search, final = rates.get("search") or float("nan"), rates.get("final") or float("nan")
            peak = "n/a" if s["peak_mib"] is None else f"{s['peak_mib']:.0f} MiB"
            print(f"{precision}: {s['accelerator']}; search {search:.0f} images/s, final training {final:.0f} "
                  f"images/s (search / final {search / final:.2f}); test accuracy {s['test_accuracy']:.4f}; "
                  f"predicted {s['predicted_ms']:.1f} ms; peak {peak}; {time.perf_counter() - started:.0f} s")
            if precision == "bf16":
                single_peak = s["peak_mib"]
        multi = run("multipath", "bf16", args, Path(tmp) / "mp", steps_per_epoch=args.multipath_steps)
        if single_peak is not None and multi["peak_mib"]:
            print(f"peak GPU memory, bf16: single-path {single_peak:.0f} MiB, multi-path supernet "
                  f"{multi['peak_mib']:.0f} MiB (ratio {single_peak / multi['peak_mib']:.2f})")
        else:
            print("peak GPU memory: n/a on the CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
