"""Predictor error divided by the device's own repeat noise, on this CPU (goal: at most 1.5).

    python bench/predictor.py [--device devices/onnx-host.toml] [--table T] [--samples 30] [--runs 20]
                              [--out runs/bench-predictor] [--smoke]

``--smoke`` (seconds; the test suite runs it): the shipped ``latency_tables/onnx-host.json``, 3 networks, 3 runs,
output in a temporary folder.

Without ``--table`` a latency table of this CPU is profiled first into ``OUT/host-table.json`` (resumable; the
model files are cached, so a second run skips the export). Then ``samples`` whole networks spread over the
table's latency range are exported and each measured twice, interleaved (:func:`mobilekit.latency.validate_predictor`),
and the errors of table lookup and of the layer regression (each with and without the cross-fitted whole-network
correction) are printed next to the repeat noise.

The ratio is mean absolute % error of a predictor against the mean of the two repeats, divided by the mean
absolute % difference between the two repeats. Against a single repeat (the noisier target a re-measurement
faces) the ratio is printed too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from mobilekit.latency import LayerLatencyRegressor, error_metrics, validate_predictor
from mobilekit.latency.validate import NOISE, PREDICTORS, prediction_column
from mobilekit.profile.devices import load_device
from mobilekit.profile.profiler import profile_device
from mobilekit.profile.runners import open_runner
from mobilekit.latency_table import LatencyTable
from mobilekit.space import get_space


GOAL = 1.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="devices/onnx-host.toml",
                        help="device descriptor (default: ONNX on this CPU)")
    parser.add_argument("--table", help="latency table of that device (default: profile one into OUT)")
    parser.add_argument("--samples", type=int, default=30, help="networks to measure (default 30)")
    parser.add_argument("--runs", type=int, default=20, help="timed inferences per measurement (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-predictor", help="output folder (default runs/bench-predictor)")
    parser.add_argument("--smoke", action="store_true", help="seconds: the shipped table, 3 networks, 3 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        import tempfile

        args.table, args.samples, args.runs = args.table or "latency_tables/onnx-host.json", 3, 3
        args.out = tempfile.mkdtemp(prefix="mobilekit-bench-predictor-")

    out = Path(args.out)
    descriptor = load_device(args.device)
    started = time.perf_counter()
    with open_runner(descriptor) as runner:
        if args.table:
            table = LatencyTable.load(args.table)
        else:
            print(f"profiling {descriptor.name} into {out / 'host-table.json'} (resumes; model files are cached)")
            table = profile_device(runner, get_space(), out / "host-table.json", runs=30, repeats=3)
        fit_started = time.perf_counter()
        predictor = LayerLatencyRegressor().fit_table(table)
        print(f"regression {predictor.model_}: held-out layer error RMSE {predictor.heldout_['rmse_ms']:.3f} ms, "
              f"MAPE {predictor.heldout_['mape_pct']:.2f} % ({predictor.n_train_} entries, "
              f"{time.perf_counter() - fit_started:.0f} s)")
        report = validate_predictor(runner, table, samples=args.samples, repeats=2, seed=args.seed, out_dir=out,
                                    predictor=predictor, runs=args.runs)
    print(report.format())

    repeat_1 = np.array([row["repeat_1_ms"] for row in report.rows])
    repeat_2 = np.array([row["repeat_2_ms"] for row in report.rows])
    single_noise = error_metrics(repeat_1, repeat_2)["mape_pct"]
    print(f"\npredictor error / repeat noise (mean abs %; goal <= {GOAL})")
    print(f"{'predictor':<34} {'vs mean':>8} {'vs repeat 1':>12}")
    for name in PREDICTORS:
        predicted = np.array([row[prediction_column(name)] for row in report.rows])
        single = error_metrics(repeat_1, predicted)["mape_pct"] / single_noise
        print(f"{name:<34} {report.noise_ratio(name):>8.2f} {single:>12.2f}")
    best = report.noise_ratio()
    print(f"best: {report.best_predictor}, ratio {best:.2f} -> goal {'met' if best <= GOAL else 'NOT met'}; "
          f"repeat noise {report.metrics[NOISE]['mape_pct']:.2f} %; "
          f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
