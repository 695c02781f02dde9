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
    parser.add_argument("--score-images", type=positive_int, default=None,
                        help="score the files on N test images (stratified, seeded; default: the whole test split "
                             "of --data or of the run's data)")
    parser.add_argument("--out", required=True, help="output folder (model files + model.json)")
    parser.set_defaults(func=run_export)

    check = subparsers.add_parser(
        "check", help="open a .onnx / .tflite file, run and time it; with --data, score it on labelled images",
        description="Open MODEL, run it and time it. With --data, score it on that data set's test split at the "
                    "file's own resolution, normalized as the model.json beside it says (accuracy, confusion "
                    "matrix), and with --weights compare it with those PyTorch weights on the same images.")
    check.add_argument("model", help="model file")
    check.add_argument("--runs", type=positive_int, default=10, help="timed runs (default 10)")
    check.add_argument("--data", default=None, help="labelled images to score the file on (e.g. digits, folder:DIR)")
    check.add_argument("--split", default="test", choices=("test", "val", "train"),
                       help="which split of --data (default test)")
    check.add_argument("--seed", type=_seed, default=0,
                       help="the split's seed (the run's --seed; default 0)")
    check.add_argument("--score-images", type=positive_int, default=None,
                       help="score N images of the split (stratified, seeded; default all)")
    check.add_argument("--model-json", default=None, help="model.json describing the file (default: beside it)")
    check.add_argument("--weights", default=None,
                       help="PyTorch state_dict of the same network (architecture from model.json) to compare with")
    check.add_argument("--out", default=None,
                       help="folder for check.json and confusion.png (default: print only)")
    check.set_defaults(func=run_check)


def _seed(text: str) -> int:
    value = int_at_least(0)(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{value} is too large; a seed is 0 to 2**32-1")
    return value


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
    evaluation, evaluation_name = None, None
    data = args.data or (bundle or {}).get("data")
    if data:
        from mobilekit.data import load_dataset
        from mobilekit.export.scoring import stratified_subset

        seed = _run_seed(bundle)
        # a run's data at its training resolution (the files' resolution is served on access by test_at)
        resolution = int(bundle.get("train_resolution") or space.resolution) if bundle else space.resolution
        splits = load_dataset(data, resolution=resolution, seed=seed)
        representative = _stack(splits.val, 64)
        if bundle is None:      # a run's own normalisation wins: the weights were trained with it
            mean, std, class_names = splits.mean, splits.std, splits.class_names
        elif splits.num_classes != space.num_classes:
            raise ConfigError(f"--data {data} has {splits.num_classes} classes, the network {space.num_classes}; "
                              "pass the data the weights were trained on")
        evaluation = stratified_subset(splits.test_at(space.resolution, mean, std), args.score_images, seed)
        evaluation_name = (f"{splits.name} test split (seed {seed}), {len(evaluation)} images at "
                           f"{space.resolution}x{space.resolution}")
    elif args.weights and bundle is None:
        print("warning: trained weights without --data or --run: model.json records mean 0 / std 1 and no class "
              "names; pass --run RUN_FOLDER or the --data the weights were trained on", file=sys.stderr)
    print(f"architecture: {arch.to_string()}")
    print(f"input (1, 3, {space.resolution}, {space.resolution}), {space.num_classes} classes, width {space.width:g}"
          f"{', weights ' + args.weights if args.weights else ', random weights'}")
    started = time.perf_counter()
    report = export_model(model.eval(), args.out, formats=args.formats or ("onnx", "tflite"),
                          representative=representative, mean=mean, std=std, class_names=class_names,
                          evaluation=evaluation if args.weights else None, evaluation_name=evaluation_name)
    for fmt, path in report.files.items():
        print(f"  {path}  ({path.stat().st_size / 1e6:.1f} MB)  {report.checks[fmt]}")
    for score in report.scores.values():
        print(f"  scored {score.line()}")
    print(f"wrote {report.model_json} in {time.perf_counter() - started:.0f} s")
    return 0


def _bundle(args: argparse.Namespace) -> dict | None:
    """The run bundle (``bundle.json``) of ``--run``, or the one beside ``--weights``; fills --arch / --weights
    from the run folder when they are not given."""
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
    from mobilekit.validation.run_files import load_bundle

    bundle = load_bundle(path)  # every field typed and range-checked: a damaged bundle is one line
    bundle["_folder"] = path.parent
    return bundle


def _run_seed(bundle: dict | None) -> int:
    """The seed of the run a bundle comes from (its split of the data), from ``bundle.json`` or the run's
    ``config.json``; 0 without either."""
    if not bundle:
        return 0
    if isinstance(bundle.get("seed"), int):
        return bundle["seed"]
    import json

    config = bundle.get("_folder") and (bundle["_folder"] / "config.json")
    try:
        return int(json.loads(config.read_text()).get("seed", 0)) if config and config.is_file() else 0
    except (OSError, ValueError, TypeError, AttributeError):
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
    if args.data is None:
        for option in ("weights", "out", "model_json", "score_images"):
            if getattr(args, option) is not None:
                raise ConfigError(f"--{option.replace('_', '-')} needs --data (the labelled images to score on)")
        return 0
    return _check_data(args)


def _check_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mobilekit.export.check import check_on_data, plot_confusion
    from mobilekit.jsonio import write_json_atomic
    from mobilekit.validation import check_input_file, check_output_dir

    if args.weights:
        check_input_file(args.weights, "--weights", missing="no such weights file")
    if args.model_json:
        check_input_file(args.model_json, "--model-json", missing="no such file")
    out = check_output_dir(args.out, "--out") if args.out else None
    if out is not None:
        from mobilekit import safewrite

        for name in ("check.json", "confusion.png"):  # refused before scoring, not after the first file
            safewrite.claim(Path(out) / name)
    result = check_on_data(args.model, args.data, split=args.split, seed=args.seed, images=args.score_images,
                           model_json=args.model_json, weights=args.weights)
    print(f"accuracy {result.accuracy:.4f} on {result.images} {result.split} images of {result.data} at "
          f"{result.resolution}x{result.resolution}")
    if result.pytorch_accuracy is not None:
        print(f"PyTorch weights {args.weights}: accuracy {result.pytorch_accuracy:.4f}; top-1 agreement with the "
              f"file {result.agreement:.1%} on the same images")
    for note in result.notes:
        print(f"note: {note}")
    width = max(len(str(n)) for n in result.class_names[:20])
    if len(result.class_names) <= 20:
        print("confusion matrix (rows: true class, columns: predicted):")
        for name, row in zip(result.class_names, result.confusion):
            print(f"  {str(name):>{width}} " + " ".join(f"{v:4d}" for v in row))
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out) / "check.json", result.to_dict())
        plot = plot_confusion(result, Path(out) / "confusion.png")
        print(f"wrote {Path(out) / 'check.json'} and {plot}")
    return 0
