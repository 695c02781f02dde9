"""``mobilekit export`` and ``mobilekit check``: architecture -> verified ONNX / TFLite files, and a quick look
at any model file."""

from __future__ import annotations

import argparse
import sys
import time

from mobilekit.errors import ConfigError
from mobilekit.space.search_space import MIN_RESOLUTION
from mobilekit.validation.options import int_at_least, nonempty_text, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="build an architecture and export verified ONNX / TFLite files",
        description="Build ARCH (a JSON file, or block strings for the searchable positions, e.g. "
                    "'ir_k3_e6,ir_k5_e3_se0.25,skip,...'), export it, and check every file against PyTorch.")
    parser.add_argument("--arch", default=None, type=nonempty_text,
                        help="architecture JSON file or comma-separated block strings (default: the --run's)")
    parser.add_argument("--run", default=None,
                        help="a search's run folder: its arch.json, weights.pt and bundle.json (normalisation, "
                             "class names, resolution) are the deliverable")
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
    bundle = _bundle(args)
    if args.arch is None:
        raise ConfigError("export needs the architecture: pass --arch FILE_OR_BLOCKS or --run RUN_FOLDER")
    if args.weights:
        check_input_file(args.weights, "--weights", missing="no such weights file")
    arch = read_architecture(args.arch)
    info = arch.space.describe()
    space = get_space(args.space or info["name"], width=args.width or info["width"],
                      resolution=args.resolution or (bundle or {}).get("deploy_resolution") or info["resolution"],
                      num_classes=args.num_classes or info["num_classes"])
    arch = arch.with_space(space)
    model = build_torch_model(arch)
    if args.weights:
        load_weights(model, args.weights)
    representative, mean, std, class_names = None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None
    if bundle is not None:
        mean, std, class_names = tuple(bundle["mean"]), tuple(bundle["std"]), bundle.get("class_names")
    if args.data:
        from mobilekit.data import load_dataset

        splits = load_dataset(args.data, resolution=space.resolution)
        representative = _stack(splits.val, 64)
        if bundle is None:      # a run's own normalisation wins: the weights were trained with it
            mean, std, class_names = splits.mean, splits.std, splits.class_names
    elif args.weights and bundle is None:
        print("warning: trained weights without --data or --run: model.json records mean 0 / std 1 and no class "
              "names; pass --run RUN_FOLDER or the --data the weights were trained on", file=sys.stderr)
    print(f"architecture: {arch.to_string()}")
    print(f"input (1, 3, {space.resolution}, {space.resolution}), {space.num_classes} classes, width {space.width:g}"
          f"{', weights ' + args.weights if args.weights else ', random weights'}")
    started = time.perf_counter()
    report = export_model(model.eval(), args.out, formats=args.formats or ("onnx", "tflite"),
                          representative=representative, mean=mean, std=std, class_names=class_names)
    for fmt, path in report.files.items():
        print(f"  {path}  ({path.stat().st_size / 1e6:.1f} MB)  {report.checks[fmt]}")
    print(f"wrote {report.model_json} in {time.perf_counter() - started:.0f} s")
    return 0


def _bundle(args: argparse.Namespace) -> dict | None:
    """The run bundle (``bundle.json``) of ``--run``, or the one beside ``--weights``; fills --arch / --weights
    from the run folder when they are not given."""
    import json
    from pathlib import Path

    if args.run is not None:
        root = Path(args.run)
        if not (root / "bundle.json").is_file():
            raise ConfigError(f"{root}: no bundle.json; --run needs a folder written by `mobilekit search` (or pass "
                              "--arch, --weights and --data)")
        args.arch = args.arch or str(root / "arch.json")
        args.weights = args.weights or str(root / "weights.pt")
        path = root / "bundle.json"
    elif args.weights and (Path(args.weights).parent / "bundle.json").is_file():
        path = Path(args.weights).parent / "bundle.json"
    else:
        return None
    try:
        bundle = json.loads(path.read_text())
        if not isinstance(bundle, dict) or len(bundle["mean"]) != 3 or len(bundle["std"]) != 3:
            raise ValueError("mean and std need 3 values")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a run bundle ({exc}); re-run the search or pass --arch, --weights and "
                          "--data") from None
    return bundle


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
