"""``mobilekit export`` and ``mobilekit check``: architecture -> verified ONNX / TFLite files, and a quick look
at any model file."""

from __future__ import annotations

import argparse
import time

from mobilekit.space.search_space import MIN_RESOLUTION
from mobilekit.validation.options import int_at_least, nonempty_text, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="build an architecture and export verified ONNX / TFLite files",
        description="Build ARCH (a JSON file, or block strings for the searchable positions, e.g. "
                    "'ir_k3_e6,ir_k5_e3_se0.25,skip,...'), export it, and check every file against PyTorch.")
    parser.add_argument("--arch", required=True, type=nonempty_text,
                        help="architecture JSON file or comma-separated block strings")
    parser.add_argument("--weights", help="state_dict saved with torch.save (default: random weights)")
    parser.add_argument("--space", default=None, help="search space of a block-string ARCH (default spnas-mnasnet)")
    parser.add_argument("--width", type=positive_float, default=None,
                        help="width multiplier (default 1.0 or the JSON's)")
    parser.add_argument("--resolution", type=int_at_least(MIN_RESOLUTION), default=None,
                        help="input resolution of the files (default 224)")
    parser.add_argument("--num-classes", type=positive_int, default=None, help="classifier outputs (default 1000)")
    parser.add_argument("--format", action="append", choices=("onnx", "tflite", "tflite-int8"), dest="formats",
                        help="repeat for several formats (default: onnx and tflite)")
    parser.add_argument("--data", default=None,
                        help="data set for int8 calibration and checks (e.g. digits); random inputs when omitted")
    parser.add_argument("--out", required=True, help="output folder (model files + model.json)")
    parser.set_defaults(func=run_export)

    check = subparsers.add_parser("check", help="open a .onnx / .tflite file, run it once and print its shapes")
    check.add_argument("model", help="model file")
    check.add_argument("--runs", type=positive_int, default=10, help="timed runs (default 10)")
    check.set_defaults(func=run_check)


def run_export(args: argparse.Namespace) -> int:
    from mobilekit.export import export_model, load_weights
    from mobilekit.models import build_torch_model
    from mobilekit.space import get_space, read_architecture
    from mobilekit.validation import check_input_file, check_output_dir

    check_output_dir(args.out, "--out")
    if args.weights:
        check_input_file(args.weights, "--weights", missing="no such weights file")
    arch = read_architecture(args.arch)
    info = arch.space.describe()
    space = get_space(args.space or info["name"], width=args.width or info["width"],
                      resolution=args.resolution or info["resolution"],
                      num_classes=args.num_classes or info["num_classes"])
    arch = arch.with_space(space)
    model = build_torch_model(arch)
    if args.weights:
        load_weights(model, args.weights)
    representative, mean, std = None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if args.data:
        from mobilekit.data import load_dataset

        splits = load_dataset(args.data, resolution=space.resolution)
        representative = _stack(splits.val, 64)
        mean, std = splits.mean, splits.std
    print(f"architecture: {arch.to_string()}")
    print(f"input (1, 3, {space.resolution}, {space.resolution}), {space.num_classes} classes, width {space.width:g}"
          f"{', weights ' + args.weights if args.weights else ', random weights'}")
    started = time.perf_counter()
    report = export_model(model.eval(), args.out, formats=args.formats or ("onnx", "tflite"),
                          representative=representative, mean=mean, std=std)
    for fmt, path in report.files.items():
        print(f"  {path}  ({path.stat().st_size / 1e6:.1f} MB)  {report.checks[fmt]}")
    print(f"wrote {report.model_json} in {time.perf_counter() - started:.0f} s")
    return 0


def _stack(dataset, count: int):
    import numpy as np

    return np.stack([dataset[i][0].numpy() for i in range(min(count, len(dataset)))])


def run_check(args: argparse.Namespace) -> int:
    import numpy as np

    from mobilekit.export import load_model_file
    from mobilekit.profile.host_timing import time_model
    from mobilekit.validation import check_input_file

    model = load_model_file(check_input_file(args.model, "MODEL", missing="no such model file"))
    shape = model.input_shape
    sample = np.random.default_rng(0).standard_normal(shape[1:]).astype(np.float32)
    output = model.run(sample[None])
    timing = time_model(model, runs=args.runs, warmup=2)
    print(f"{args.model}: input {shape}, output {tuple(output.shape)}, "
          f"median {timing.median_ms:.2f} ms over {timing.runs} runs (1 thread)")
    return 0
