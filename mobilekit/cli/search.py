"""``mobilekit search``: search an architecture under a latency target, train, export and measure it.

A thin layer over :func:`mobilekit.search.run_search`; a recipe (``--config search/pixel1-80ms.toml``) holds the
same settings, and flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="search a network under a latency target (single-path NAS, random, multipath)",
        description="Search an architecture whose table latency meets --target-ms, train it on --data, export "
                    "ONNX/TFLite and measure it on the table's device when reachable. Results go to --out.")
    add = parser.add_argument
    add("--config", help="TOML recipe with the same settings (e.g. search/pixel1-80ms.toml); flags override it")
    add("--method", choices=("single-path", "random", "multipath"), help="searcher (default single-path)")
    add("--table", help="latency table JSON (e.g. latency_tables/pixel1-spnas.json)")
    add("--target-ms", type=float, help="latency target in ms (must lie within the table's range)")
    add("--data", help="digits (default), fashion-mnist, idx:DIR, cifar10:DIR or folder:DIR")
    add("--train-subset", type=int, help="train on N training images (stratified, seeded) for quick runs")
    add("--epochs", type=int, help="search epochs (default 8)")
    add("--out", help="run folder, e.g. runs/p80")
    add("--relax", choices=("sigmoid", "ste", "softmax"), help="single-path relaxation (default sigmoid)")
    add("--final-epochs", type=int, help="epochs to train the derived network (default: --epochs)")
    add("--final-init", choices=("inherit", "scratch"),
        help="start the final training from the search weights (default) or from scratch")
    add("--resume", action="store_true", default=None, help="continue the run in --out from its checkpoint")
    add("--seed", type=int, help="random seed (default 0)")
    add("--device", help="device descriptor TOML to measure the exported model on (default: the host when the "
                         "table was measured on the host)")
    add("--train-resolution", type=int, help="training input resolution (default 32)")
    add("--batch-size", type=int, help="batch size (default 64)")
    add("--steps-per-epoch", type=int, help="cap on batches per epoch, for quick tries")
    add("--lr", type=float, help="weight learning rate (default 3e-3, Adam)")
    add("--threshold-lr", type=float, help="single-path threshold learning rate (default 0.003)")
    add("--lambda", dest="lambda_init", type=float, help="initial weight of log R in the loss (default 0)")
    add("--lambda-lr", type=float, help="integral gain of lambda toward the target (default 0.1)")
    add("--lambda-p", type=float, help="proportional gain of lambda (default 8); both gains 0 keep lambda fixed")
    add("--se", dest="include_se", choices=("auto", "on", "off"),
        help="search SE types: auto (when the table has them or --se-factors is given), on, off")
    add("--se-factors", help="table with SE entries whose SE/non-SE ratios fill this table's missing SE types")
    add("--random-samples", type=int, help="random baseline: architectures to try (default 4)")
    add("--proxy-epochs", type=int, help="random baseline: epochs per candidate (default epochs // samples)")
    add("--export", help="comma-separated export formats (default onnx,tflite), or none")
    add("--threads", type=int, help="torch CPU threads (default: half the cores, at least 1)")
    add("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mobilekit.search import make_config, run_search

    include_se = {"auto": None, "on": True, "off": False}.get(args.include_se or "auto")
    overrides = {name: getattr(args, name) for name in (
        "method", "table", "target_ms", "data", "train_subset", "epochs", "out", "relax", "final_epochs", "final_init", "resume",
        "seed", "device", "train_resolution", "batch_size", "steps_per_epoch", "lr", "threshold_lr",
        "lambda_init", "lambda_lr", "lambda_p", "se_factors", "random_samples", "proxy_epochs", "export", "threads")}
    if args.include_se is not None:
        overrides["include_se"] = include_se
    config = make_config(args.config, **overrides)
    summary = run_search(config, progress=not args.no_progress, log=print)
    measured = summary.get("measured_ms")
    print(f"{summary['method']}: {summary['arch']}")
    print(f"target {summary['target_ms']:g} ms | predicted {summary['predicted_ms']:.2f} ms | measured "
          + (f"{measured:.2f} ms on {summary.get('measured_on')}" if measured is not None else
             f"- ({summary.get('measure_note')})"))
    print(f"val accuracy {summary['val_accuracy']:.4f} | test accuracy {summary['test_accuracy']:.4f} | "
          f"search {summary['search_s']:.0f} s | {summary['resolution_note']}")
    print(f"run folder: {config.out} (summary.json, arch.json, metrics.jsonl, search.png, architecture.png, weights.pt)")
    if summary.get("export_error"):
        print(f"mobilekit search: export failed: {summary['export_error']}", file=sys.stderr)
        return 1
    return 0
