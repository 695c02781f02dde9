"""``make demo``: the whole mobilekit pipeline on this machine's CPU, no phone needed.

1. profile  — a reduced latency table of this CPU (onnxruntime, 1 thread, 64x64 input instead of 224, fewer
              runs) for the reference space: every position x type.
2. latency  — fit the layer regression on it (held-out error), then validate lookup and regression against
              whole random networks measured on this CPU, next to the CPU's own repeat noise.
3. search   — Single-Path NAS on scikit-learn's digits under a target between the fastest and slowest network
              the table allows, trained at the table's resolution (64x64): the resolution the latency is
              predicted for and the files are exported at, so the reported accuracy is the files' own.
4. export   — the found network as ONNX and TFLite, each checked against PyTorch, and measured on this CPU
              against the target.

Every stage resumes: a second ``make demo`` reuses the table and model files it already has.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mobilekit import safewrite
from mobilekit.errors import MobilekitError

DEVICE = Path(__file__).resolve().parents[1] / "devices" / "onnx-host.toml"


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def profile_stage(out: Path, resolution: int, runs: int) -> Path:
    from mobilekit.profile.devices import load_device
    from mobilekit.profile.profiler import profile_device, summarize_table
    from mobilekit.profile.runners import open_runner
    from mobilekit.space import get_space

    stage(f"1. profile this CPU: every layer position x type at {resolution}x{resolution} (onnxruntime, 1 thread)")
    table_path = out / f"host-onnx-{resolution}.json"
    with open_runner(load_device(DEVICE)) as runner:
        table = profile_device(runner, get_space(resolution=resolution), table_path, runs=runs, repeats=2,
                               work_dir=out / "model-files")
    for line in summarize_table(table).lines():
        print(f"  {line}")
    print(f"  table: {table_path}")
    return table_path


def latency_stage(out: Path, table_path: Path, samples: int) -> dict:
    from mobilekit.latency import LayerLatencyRegressor, validate_predictor
    from mobilekit.latency.metrics import significant
    from mobilekit.profile.devices import load_device
    from mobilekit.profile.runners import open_runner
    from mobilekit.latency_table import LatencyTable

    stage(f"2. latency model: fit the regression, validate on {samples} whole networks measured on this CPU")
    table = LatencyTable.load(table_path)
    regressor = LayerLatencyRegressor().fit_table(table)
    heldout = regressor.heldout_
    print(f"  regression ({regressor.model_}): held-out layers RMSE {significant(heldout['rmse_ms'])} ms, mean abs error {heldout['mape_pct']:.1f} %")
    with open_runner(load_device(DEVICE)) as runner:
        report = validate_predictor(runner, table, samples=samples, repeats=2, out_dir=out / "validation", runs=20)
    for line in report.format().splitlines():
        print(f"  {line}")
    return {"best_predictor": report.best_predictor, "noise_ratio": report.noise_ratio(),
            "mape_pct": report.metrics[report.best_predictor]["mape_pct"]}


def search_stage(out: Path, table_path: Path, epochs: int) -> dict:
    """Single-Path NAS on digits at the table's own resolution (pixels; train = predict = export); a finished
    run with the same settings is reused."""
    from mobilekit.profile.profiler import summarize_table
    from mobilekit.latency_table import LatencyTable
    from mobilekit.search.config import make_config
    from mobilekit.search.run import run_search

    table = LatencyTable.load(table_path)
    summary = summarize_table(table)
    target_ms = round(summary.fastest_ms + 0.5 * (summary.slowest_ms - summary.fastest_ms), 1)
    stage(f"3. search: Single-Path NAS on digits, target {target_ms} ms "
          f"(the table allows {summary.fastest_ms:.2f}-{summary.slowest_ms:.2f} ms)")
    run = out / "search"
    config = make_config(None, table=str(table_path), target_ms=target_ms, out=str(run), method="single-path",
                         data="digits", epochs=epochs, final_epochs=epochs, seed=0,
                         train_resolution=int(table.space["resolution"]),  # the default, written out for reuse
                         device=str(DEVICE), resume=(run / "config.json").exists())
    finished = run / "summary.json"
    if finished.exists() and json.loads((run / "config.json").read_text()) == config.to_dict():
        print(f"  reusing the finished run in {run}/ (delete it to search again)")
        from mobilekit.validation.run_files import load_summary

        return load_summary(finished)
    return run_search(config, progress=True, log=lambda message: print(f"  {message}", flush=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    parser.add_argument("--resolution", type=int, default=64,
                        help="resolution of the table, the training and the exported files (default 64)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per table entry (default 20)")
    parser.add_argument("--samples", type=int, default=20, help="networks measured to validate the predictor")
    parser.add_argument("--epochs", type=int, default=4, help="search epochs, and again for the final training")
    args = parser.parse_args(argv)
    from mobilekit.cli import quiet_native_logs

    quiet_native_logs()     # TensorFlow/absl/XNNPACK start-up lines below errors, as the CLI does
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        table_path = profile_stage(out, args.resolution, args.runs)
        latency = latency_stage(out, table_path, args.samples)
        result = search_stage(out, table_path, args.epochs)
    except MobilekitError as exc:
        print(f"mobilekit demo: error: {exc}", file=sys.stderr)
        return 2
    stage("4. result")
    measured = result.get("measured_ms")
    print(f"  architecture: {result.get('arch')}")
    print(f"  target {result['target_ms']} ms; predicted {result['predicted_ms']:.2f} ms; measured on this CPU: "
          + (f"{measured:.2f} ms" if measured is not None else "not measured"))
    print(f"  digits accuracy (PyTorch at {result['train_resolution']}x{result['train_resolution']}): val "
          f"{result['val_accuracy']:.1%}, test {result['test_accuracy']:.1%}")
    if result.get("accuracy") is not None:
        print(f"  exported {result['accuracy_file']} file's own test accuracy: {result['accuracy']:.1%} on "
              f"{result['accuracy_images']} images at {result['deploy_resolution']}x{result['deploy_resolution']}")
    print(f"  predictor error on whole networks: {latency['mape_pct']:.1f} % ({latency['best_predictor']}), "
          f"{latency['noise_ratio']:.2f} x this CPU's repeat noise")
    print(f"  files: {out / 'search'}/ (summary.json, arch.json, plots, model.onnx, model.tflite, model.json)")
    safewrite.write_text(out / "demo-summary.json",
                         json.dumps({"latency": latency, "search": result}, indent=2, default=str) + "\n")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
