"""Wall time per latency-table entry, and its overhead over the pure benchmark time, on this CPU and on the ADB
device emulator.

For a few positions at a small resolution it profiles the host (models run in-process) and the emulator over
ADB (each file pushed in a batch, then ``benchmark_model`` -- the LiteRT-backed stand-in -- started once per
file through the shell), and prints per entry:

* ``wall``: wall time to measure the entry (transfer share, process start, model load, warm-up, timed runs,
  parsing; exports excluded, they are listed apart),
* ``pure``: time inside the timed inferences (runs x mean latency),
* ``overhead``: wall / pure.

    python bench/profile.py [--resolution 64] [--positions 0,5,13] [--runs 20] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mobilekit.profile.devices import parse_device
from mobilekit.profile.model_files import default_work_dir
from mobilekit.profile.profiler import parse_positions, profile_device
from mobilekit.profile.runners import open_runner
from mobilekit.space import get_space


def entries(table) -> dict[str, dict]:
    rows = {name: entry for name, entry in table.fixed.items()}
    for position, name, entry in table.iter_entries():
        if entry.get("measured"):
            rows[f"{position}:{name}"] = entry
    return rows


def profile(device, space, positions, runs, warmup, work_dir, out) -> tuple[dict[str, dict], float]:
    started = time.perf_counter()
    with open_runner(device) as runner:
        table = profile_device(runner, space, out, runs=runs, repeats=1, positions=positions, resume=False,
                               progress=False, work_dir=work_dir, warmup=warmup)
    return entries(table), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--positions", default="0,5,13")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--work-dir", default=None, help="model files (default: the profiler's cache)")
    args = parser.parse_args()

    from mobilekit.testing.adb_emulator import AdbDeviceEmulator
    from mobilekit.testing.benchmark_model_litert import write_benchmark_model_wrapper

    space = get_space(resolution=args.resolution)
    positions = parse_positions(args.positions, space)
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir()
    print(f"space {space.name} at {args.resolution}x{args.resolution}, positions {args.positions} + stem/head, "
          f"{args.runs} runs + {args.warmup} warm-up per entry, 1 thread")
    with tempfile.TemporaryDirectory(prefix="mobilekit-bench-") as tmp:
        tmp_path = Path(tmp)
        host, host_s = profile(parse_device({"name": "host"}), space, positions, args.runs, args.warmup, work_dir,
                               tmp_path / "host.json")
        binary = write_benchmark_model_wrapper(tmp_path)
        with AdbDeviceEmulator(tmp_path / "storage") as emulator:
            device = parse_device({"name": "emulator", "transport": "adb", "address": emulator.address,
                                   "use_server": False, "key_path": str(tmp_path / "adbkey"),
                                   "benchmark_binary": str(binary)})
            adb, adb_s = profile(device, space, positions, args.runs, args.warmup, work_dir, tmp_path / "adb.json")

    export_s = sum(e["export_s"] for e in host.values())
    print(f"exports: {export_s:.1f} s for {sum(1 for e in host.values() if e['export_s'] > 0)} new files "
          "(0 when the model files were cached)")
    header = f"{'entry':28} {'latency':>9} | {'host wall':>9} {'pure':>8} {'overhead':>8} | {'adb wall':>9} {'pure':>8} {'overhead':>8}"
    print(header)
    print("-" * len(header))
    host_ratios, adb_ratios = [], []
    for key in host:
        h, a = host[key], adb.get(key)
        h_wall = h["wall_s"] - h["export_s"]
        host_ratios.append(h_wall / h["inference_s"])
        line = f"{key:28} {h['median_ms']:7.3f}ms | {h_wall * 1e3:7.1f}ms {h['inference_s'] * 1e3:6.2f}ms {host_ratios[-1]:7.1f}x |"
        if a is not None:
            a_wall = a["wall_s"] - a["export_s"]
            adb_ratios.append(a_wall / a["inference_s"])
            line += f" {a_wall * 1e3:7.1f}ms {a['inference_s'] * 1e3:6.2f}ms {adb_ratios[-1]:7.1f}x"
        print(line)
    print("-" * len(header))
    for label, rows, total_s, ratios in (("host", host, host_s, host_ratios), ("adb emulator", adb, adb_s, adb_ratios)):
        wall = sum(e["wall_s"] - e["export_s"] for e in rows.values())
        pure = sum(e["inference_s"] for e in rows.values())
        print(f"{label:13}: {len(rows)} entries, {wall / len(rows) * 1e3:7.1f} ms wall per entry, pure benchmark "
              f"{pure / len(rows) * 1e3:6.2f} ms per entry; overhead wall/pure {wall / pure:6.1f}x in total, median "
              f"{statistics.median(ratios):6.1f}x per entry; whole profile {total_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
