"""Retrain the architectures of a finished comparison with a longer fixed recipe, to see whether the retrained
column's ranking survives more training (with the comparison's short recipe, shallow networks win because they
learn faster in a few dozen steps, whatever their quality).

    OMP_NUM_THREADS=1 python bench/retrain_longer.py runs/compare-p80 --epochs 10 [--methods single-path,random-protocol]
        [--train-subset N] [--out runs/compare-p80/longer-10.json]

Every finished cell of the named methods is retrained from scratch with :class:`~mobilekit.compare.retrain.Recipe`
(only ``--epochs`` changed) on the same data split and seed as in the comparison (the protocol's architecture i on
seed i's split, as ``mobilekit compare`` does). Results are written atomically after every architecture, and a
rerun skips the finished ones. Prints per method the mean ± std test accuracy, the margin over the protocol in
protocol standard deviations, and the Pearson correlation between skipped layers and test accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from mobilekit.compare.retrain import Recipe, retrain
from mobilekit.data import load_dataset
from mobilekit.jsonio import write_json_atomic
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, get_space


PROTOCOL = "random-protocol"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", help="a comparison's --out folder")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--methods", default=f"single-path,{PROTOCOL}")
    parser.add_argument("--train-subset", type=int, default=None, help="default: the comparison's")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long check on a made-up two-cell comparison in a temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            args.folder, args.epochs, args.out = smoke_folder(Path(tmp)), 1, None
            return run(args)
    if args.folder is None:
        parser.error("name a comparison's --out folder (or use --smoke)")
    return run(args)


def smoke_folder(tmp: Path) -> Path:
    """A comparison folder with one cell per method (random architectures of the Pixel 1 table's space)."""
    import random

    from mobilekit.search.budget import sample_in_window
    from mobilekit.latency.differentiable import ExpectedLatency

    table_path = Path(__file__).resolve().parent.parent / "latency_tables" / "pixel1-spnas.json"
    table = LatencyTable.load(table_path)
    expected = ExpectedLatency(table)
    space = table.search_space()
    (tmp / "cells").mkdir(parents=True)
    (tmp / "compare.json").write_text(json.dumps({"table": str(table_path), "data": "digits", "train_resolution": 32,
                                                  "batch_size": 10, "train_subset": 40}))
    low, high = expected.bounds_ms()
    for i, method in enumerate(("single-path", PROTOCOL)):
        arch = sample_in_window(expected, space, low, high, random.Random(i))
        (tmp / "cells" / f"{method}-0.json").write_text(json.dumps(
            {"method": method, "seed": 0, "arch": arch.to_string(), "predicted_ms": expected.lookup_ms(arch)}))
    return tmp


def run(args: argparse.Namespace) -> int:
    settings = json.loads((args.folder / "compare.json").read_text())
    subset = args.train_subset or settings.get("train_subset")
    out = args.out or args.folder / f"longer-{args.epochs}.json"
    done = json.loads(out.read_text())["cells"] if out.is_file() else {}
    methods = [m for m in args.methods.split(",") if m]
    cells = sorted(p for p in (args.folder / "cells").glob("*.json")
                   if json.loads(p.read_text()).get("method") in methods)
    table = LatencyTable.load(settings["table"])
    recipe = Recipe(epochs=args.epochs, batch_size=settings.get("batch_size", 64))
    splits_cache: dict[int, object] = {}
    for path in cells:
        cell = json.loads(path.read_text())
        if path.stem in done:
            continue
        seed = int(cell["seed"])
        if seed not in splits_cache:
            splits_cache.clear()
            splits_cache[seed] = load_dataset(settings["data"], settings["train_resolution"], seed=seed,
                                              train_subset=subset)
        splits = splits_cache[seed]
        space = table.search_space()
        space = get_space(space.name, width=space.width, resolution=settings["train_resolution"],
                          num_classes=splits.num_classes)
        arch = Architecture.from_string(space, cell["arch"])
        result = retrain(arch, splits.train, recipe, seed, {"test": splits.test})
        done[path.stem] = {"method": cell["method"], "seed": seed, "arch": cell["arch"],
                           "skips": cell["arch"].split(",").count("skip"), "predicted_ms": cell["predicted_ms"],
                           "short_recipe_test_accuracy": cell.get("retrain_test_accuracy"),
                           "test_accuracy": result["test_accuracy"], "train_s": result["train_s"]}
        write_json_atomic(out, {"comparison": str(args.folder), "recipe": recipe.to_dict(), "train_subset": subset,
                                "cells": done})
        print(f"{path.stem}: {done[path.stem]['test_accuracy']:.4f} ({done[path.stem]['skips']} skips, "
              f"{result['train_s']:.0f} s)", flush=True)
    report(done, methods, args.epochs)
    return 0


def report(done: dict, methods: list[str], epochs: int) -> None:
    by_method = {m: [c for c in done.values() if c["method"] == m] for m in methods}
    protocol = [c["test_accuracy"] for c in by_method.get(PROTOCOL, [])]
    sigma = statistics.stdev(protocol) if len(protocol) > 1 else None
    print(f"retrained {epochs} epochs (mean ± std test accuracy %; short recipe in brackets):")
    for method, rows in by_method.items():
        if not rows:
            continue
        acc = [r["test_accuracy"] for r in rows]
        short = [r["short_recipe_test_accuracy"] for r in rows if r["short_recipe_test_accuracy"] is not None]
        line = f"  {method:16s} n={len(acc):2d}  {100 * statistics.mean(acc):.2f} ± {100 * _std(acc):.2f}"
        if short:
            line += f"  [{100 * statistics.mean(short):.2f} ± {100 * _std(short):.2f}]"
        if sigma and method != PROTOCOL:
            line += f"  margin {(statistics.mean(acc) - statistics.mean(protocol)) / sigma:+.1f} σ_protocol"
        line += f"  skips {statistics.mean(r['skips'] for r in rows):.1f}"
        print(line)
    rows = list(done.values())
    if len(rows) > 2:
        r = statistics.correlation([c["skips"] for c in rows], [c["test_accuracy"] for c in rows])
        short = [c for c in rows if c["short_recipe_test_accuracy"] is not None]
        r_short = statistics.correlation([c["skips"] for c in short], [c["short_recipe_test_accuracy"] for c in short])
        print(f"  Pearson r(skipped layers, test accuracy) over {len(rows)} networks: {r:+.2f} "
              f"(short recipe: {r_short:+.2f})")


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
