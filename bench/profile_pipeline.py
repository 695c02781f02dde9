"""Profiling speed: wall time against device-busy time, with model files converted by a pool of worker
processes that runs ahead of the device (:mod:`mobilekit.profile.export_pool`).

Three measurements, each printing ``wall``, ``device busy`` (time inside the runner's measure calls) and
their ratio (1.0: the device never waited and nothing else cost time):

1. a phone-like device: the ADB emulator with a fixed per-run cost (``--run-cost`` seconds of idle time per
   ``benchmark_model`` run, on top of the real LiteRT run), from scratch (an empty model-file cache), pipelined:
   files are measured as soon as the pool has made them. Goal: ratio <= 1.3.
2. this CPU with a warm cache (the files of 3.): measuring only. Goal: ratio <= 2.
3. this CPU from scratch, before/after: serial conversions in this process (``export_workers=0``, how every
   table was made before) against the pool (one worker per core), each on its own empty cache. On the host
   the pool does not overlap the measurements unless the device is pinned (conversions would disturb them),
   so the gain is the parallel conversion.

    python bench/profile_pipeline.py [--resolution 64] [--positions 0-5] [--runs 20] [--repeats 2] [--run-cost 0.5] [--smoke]

``--smoke`` (seconds; the test suite runs it): 32 px, position 0, 2 runs, no phone run cost, no serial run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from mobilekit.profile.devices import parse_device  # noqa: E402
from mobilekit.profile.profiler import ProfileReport, parse_positions, profile_device  # noqa: E402
from mobilekit.profile.runners import open_runner  # noqa: E402
from mobilekit.space import get_space  # noqa: E402


def profile(device, space, positions, args, work_dir, out, export_workers=None) -> tuple[ProfileReport, float]:
    """Profile from a fresh table; returns the report and the time inside timed inferences (s)."""
    report = ProfileReport()
    with open_runner(device) as runner:
        table = profile_device(runner, space, out, runs=args.runs, repeats=args.repeats, positions=positions,
                               resume=False, progress=False, work_dir=work_dir, warmup=args.warmup,
                               export_workers=export_workers, report=report)
    entries = [*table.fixed.values(), *(e for _, _, e in table.iter_entries())]
    return report, sum(e.get("inference_s", 0.0) for e in entries)


def show(label: str, result: tuple[ProfileReport, float], goal: float | None = None) -> ProfileReport:
    report, pure_s = result
    verdict = "" if goal is None else f"  (goal <= {goal:g}: {'met' if report.ratio <= goal else 'NOT met'})"
    print(f"{label:40} {report.line()}{verdict}")
    print(f"{'':40} time inside timed inferences {pure_s:.2f} s (wall/pure {report.wall_s / max(pure_s, 1e-9):.1f})")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="spnas-mnasnet")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--positions", default="0-5")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run-cost", type=float, default=0.5,
                        help="idle seconds the emulated phone adds to every benchmark run (default 0.5)")
    parser.add_argument("--skip-serial", action="store_true", help="leave out the serial from-scratch host run")
    parser.add_argument("--smoke", action="store_true", help="seconds: a tiny slice, to check the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.resolution, args.positions, args.runs, args.warmup, args.repeats = 32, "0", 2, 1, 1
        args.run_cost, args.skip_serial = 0.0, True

    from mobilekit.testing.adb_emulator import AdbDeviceEmulator
    from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

    space = get_space(args.space, resolution=args.resolution)
    positions = parse_positions(args.positions, space)
    print(f"space {space.name} at {args.resolution}x{args.resolution}, positions {args.positions} + stem/head, "
          f"{args.runs} runs + {args.warmup} warm-up x {args.repeats} rounds per entry, 1 thread; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    host = parse_device({"name": "host"})
    with tempfile.TemporaryDirectory(prefix="mobilekit-bench-") as tmp:
        tmp_path = Path(tmp)
        binary = write_benchmark_model_wrapper(tmp_path)
        with AdbDeviceEmulator(tmp_path / "storage", run_cost_s=args.run_cost) as emulator:
            phone = parse_device({"name": "emulator", "transport": "adb", "address": emulator.address,
                                  "use_server": False, "key_path": str(tmp_path / "adbkey"),
                                  "benchmark_binary": str(binary)})
            adb = profile(phone, space, positions, args, tmp_path / "files-adb", tmp_path / "adb.json")
        show(f"adb emulator (+{args.run_cost:g} s/run), from scratch", adb, 1.3)
        pipelined = show("host, from scratch, worker pool",
                         profile(host, space, positions, args, tmp_path / "files-pool", tmp_path / "host-pool.json"))
        show("host, warm cache",
             profile(host, space, positions, args, tmp_path / "files-pool", tmp_path / "host-warm.json"), 2.0)
        if not args.skip_serial:
            serial = show("host, from scratch, serial (before)",
                          profile(host, space, positions, args, tmp_path / "files-serial",
                                  tmp_path / "host-serial.json", export_workers=0))
            print(f"host from scratch: serial {serial.wall_s:.1f} s -> worker pool {pipelined.wall_s:.1f} s "
                  f"({serial.wall_s / pipelined.wall_s:.2f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
